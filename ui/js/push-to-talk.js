// Push-to-talk beside the hands-free live mode: hold the button (mouse or touch) or the space bar
// to talk, release to end the turn. It runs the live mode's session with turn detection off:
// audio goes to the server only while held, and each release commits it as one turn.
//
// The first press starts the microphone and the session; audio spoken while they start is kept
// and sent once the session is ready. A press too short to hold a word is dropped (the server
// needs at least 100 ms of audio for a turn). Stop ends the session as in live mode.

import { SESSION_RATE } from "./settings.js";

const MIN_TURN_MS = 250;

export class PushToTalk {
  constructor(doc, live) {
    this.live = live;
    this.button = doc.getElementById("ptt");
    this.held = false;
    this.queued = []; // PCM16 chunks of the turn not yet sent
    this.sentMs = 0; // audio sent since the last commit
    this.commitDue = false;
    live.onRunningChange = (running) => {
      this.button.disabled = running && live.gate !== this;
    };
    const button = this.button;
    button.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault(); // no focus change, text selection or emulated mouse events
      button.setPointerCapture(event.pointerId);
      this.press();
    });
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(type, () => this.release());
    }
    button.addEventListener("contextmenu", (event) => event.preventDefault()); // a long touch
    doc.addEventListener("keydown", (event) => {
      if (event.code !== "Space" || takesSpace(event.target)) return;
      event.preventDefault();
      if (!event.repeat) this.press();
    });
    doc.addEventListener("keyup", (event) => {
      if (event.code !== "Space" || !this.held) return;
      event.preventDefault();
      this.release();
    });
    window.addEventListener("blur", () => this.release());
  }

  /** The live mode's session settings with turn detection (and so partials) off. */
  session(base) {
    const input = base.audio.input;
    return {
      ...base,
      audio: {
        ...base.audio,
        input: { ...input, turn_detection: null, transcription: { ...input.transcription, partial_interval_ms: 0 } },
      },
    };
  }

  /** Microphone audio, from the live mode: kept only while held. */
  audio(pcm, client) {
    if (!this.held) return;
    this.queued.push(pcm);
    this.flush(client);
  }

  /** The session is ready (again): send what was said meanwhile. */
  opened(client) {
    this.flush(client);
  }

  press() {
    if (this.held || this.button.disabled) return;
    this.held = true;
    this.button.setAttribute("aria-pressed", "true");
    if (!this.live.running) this.live.start({ gate: this });
    this.live.setSpeaking(true, "Talking");
  }

  release() {
    if (!this.held) return;
    this.held = false;
    this.button.setAttribute("aria-pressed", "false");
    this.commitDue = true;
    if (this.live.running) this.live.setSpeaking(false, "Ready to talk");
    this.flush(this.live.client);
  }

  flush(client) {
    if (!client?.ready) return;
    for (const pcm of this.queued) {
      if (client.sendAudio(pcm)) this.sentMs += (pcm.byteLength / 2 / SESSION_RATE) * 1000;
    }
    this.queued = [];
    if (!this.commitDue) return;
    this.commitDue = false;
    if (this.sentMs >= MIN_TURN_MS) client.commit();
    else client.send({ type: "input_audio_buffer.clear" });
    this.sentMs = 0;
  }
}

/** Controls where the space bar has a job of its own. */
function takesSpace(target) {
  return target instanceof Element && target.closest("input, select, textarea, summary, button:not(#ptt), [contenteditable]");
}
