// Live-mode settings: the form controls, remembered in localStorage, and the realtime session
// configuration they stand for.

const STORAGE_KEY = "voxtral-ui.settings";
const PARTIAL_INTERVAL_MS = 500;
export const SESSION_RATE = 24000;

const CONTROLS = {
  language: { id: "language", prop: "value" },
  threshold: { id: "vad-threshold", prop: "valueAsNumber" },
  silenceMs: { id: "silence-ms", prop: "valueAsNumber" },
  partials: { id: "partials", prop: "checked" },
  assistant: { id: "assistant", prop: "checked" },
};

export class Settings {
  /** Bind to the controls, restore saved values, and call `onChange` after every change. */
  constructor(root, onChange) {
    this.inputs = {};
    const saved = loadSaved();
    for (const [key, { id, prop }] of Object.entries(CONTROLS)) {
      const input = root.getElementById(id);
      if (key in saved) input[prop] = saved[key];
      input.addEventListener("input", () => {
        this.showValues(root);
        this.save();
        onChange();
      });
      this.inputs[key] = input;
    }
    this.showValues(root);
  }

  get values() {
    return Object.fromEntries(Object.entries(CONTROLS).map(([key, { prop }]) => [key, this.inputs[key][prop]]));
  }

  /** The `session` object of a `session.update` for these settings. */
  session() {
    const v = this.values;
    // With assistant replies on, the session is a conversation (OpenAI's `type: "realtime"`):
    // every turn gets a text reply from the served model.
    const conversation = v.assistant ? { type: "realtime", output_modalities: ["text"] } : { type: "transcription" };
    return {
      ...conversation,
      audio: {
        input: {
          format: { type: "audio/pcm", rate: SESSION_RATE },
          transcription: {
            model: "whisper-1",
            language: v.language || null,
            partial_interval_ms: v.partials ? PARTIAL_INTERVAL_MS : 0,
          },
          turn_detection: {
            type: "server_vad",
            threshold: v.threshold,
            prefix_padding_ms: 300,
            silence_duration_ms: v.silenceMs,
          },
        },
      },
    };
  }

  showValues(root) {
    const v = this.values;
    root.getElementById("vad-threshold-value").textContent = v.threshold.toFixed(2);
    root.getElementById("silence-ms-value").textContent = `${(v.silenceMs / 1000).toFixed(1)} s`;
  }

  save() {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(this.values));
    } catch {
      // Storage can be disabled (private windows); the settings then last for this page only.
    }
  }
}

function loadSaved() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY)) ?? {};
  } catch {
    return {};
  }
}
