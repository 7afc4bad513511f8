// Live mode: the Start/Stop button ties the microphone, the realtime connection and the
// transcript view together, and turns their states into what the page shows. Hands-free sessions
// go over WebRTC (the microphone as an Opus track) where the browser and the server can, else
// over the WebSocket; push-to-talk, which sends only the audio of a press, uses the WebSocket.

import { apiKey } from "./api-key.js";
import { hideMessage, showMessage } from "./message.js";
import { listMicrophones, Microphone, MicrophoneError } from "./microphone.js";
import { RealtimeClient, realtimeUrl } from "./realtime-client.js";
import { SESSION_RATE, Settings } from "./settings.js";
import { TranscriptView } from "./transcript-view.js";
import { WebRtcClient } from "./webrtc-client.js";

const CHUNK_MS = 100;
const DRAIN_TIMEOUT_MS = 5000;

const RETRY_MESSAGES = {
  unreachable: ["Cannot reach the server.", "The live transcription service does not answer."],
  full: ["The server is full.", "Every live transcription session is in use."],
  lost: ["The connection to the server was lost.", "Turns still being transcribed are lost."],
  refused: ["The server closed the session.", ""],
};

export class LiveMode {
  constructor(doc) {
    this.ui = Object.fromEntries(
      ["mic", "live-toggle", "connection", "speaking", "level", "live-message", "clear-turns", "settings"].map((id) => [
        id,
        doc.getElementById(id),
      ]),
    );
    this.view = new TranscriptView(doc.getElementById("turns"), doc.getElementById("turns-empty"));
    this.settings = new Settings(doc, () => this.client?.updateSession());
    this.running = false;
    this.gate = null; // push-to-talk, when it runs the session (see push-to-talk.js)
    this.onRunningChange = null;
    this.client = null;
    this.webSocketOnly = false; // WebRTC failed once on this page: the WebSocket from then on
    this.mic = null;
    this.speechEnds = new Map(); // item_id → performance.now() when its speech ended
    this.ui["live-toggle"].addEventListener("click", () => (this.running ? this.stop() : this.start()));
    this.ui["clear-turns"].addEventListener("click", () => this.view.clear());
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.fillMicrophones());
    if (matchMedia("(max-width: 760px)").matches) this.ui.settings.open = false;
    this.fillMicrophones();
  }

  /** Start hands-free, or with `gate` (push-to-talk) deciding which audio is sent and when. */
  async start({ gate = null } = {}) {
    this.gate = gate;
    hideMessage(this.ui["live-message"]);
    this.setRunning(true);
    this.setSpeaking(false, "Starting microphone…");
    this.mic = new Microphone({
      deviceId: this.ui.mic.value,
      rate: SESSION_RATE,
      chunkMs: CHUNK_MS,
      onChunk: (pcm) => this.onAudio(pcm),
    });
    try {
      await this.mic.start();
    } catch (error) {
      const problem = error instanceof MicrophoneError ? error : new MicrophoneError("The microphone could not be started.", String(error));
      showMessage(this.ui["live-message"], problem.message, problem.detail);
      await this.mic.stop();
      this.mic = null;
      this.setRunning(false);
      this.setSpeaking(false, "Not listening");
      return;
    }
    this.fillMicrophones();
    this.client = this.newClient();
    this.client.connect();
  }

  newClient() {
    const common = {
      session: () => (this.gate ? this.gate.session(this.settings.session()) : this.settings.session()),
      onEvent: (event) => this.onEvent(event),
      onState: (state, info) => this.onState(state, info),
    };
    if (!this.gate && !this.webSocketOnly && WebRtcClient.supported()) {
      const mic = this.mic;
      return new WebRtcClient({ ...common, track: () => mic.stream.getAudioTracks()[0], headers: () => apiKey.headers() });
    }
    return new RealtimeClient({ ...common, url: realtimeUrl(), rate: SESSION_RATE, protocols: () => apiKey.subprotocols() });
  }

  /** Stop the microphone, let turns already spoken finish (briefly), then disconnect. */
  async stop() {
    const toggle = this.ui["live-toggle"];
    toggle.disabled = true;
    await this.mic?.stop();
    this.mic = null;
    this.ui.level.style.width = "0";
    if (this.ui.speaking.dataset.active === "true") this.client?.commit();
    this.setSpeaking(false, "Finishing…");
    const deadline = performance.now() + DRAIN_TIMEOUT_MS;
    while (this.client?.ready && this.view.pending > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (this.ui.connection.dataset.state === "retrying") hideMessage(this.ui["live-message"]);
    this.client?.close();
    this.client = null;
    this.view.abandonPending("stopped");
    this.setRunning(false);
    this.setSpeaking(false, "Not listening");
    toggle.disabled = false;
  }

  onAudio(pcm) {
    this.showLevel(pcm);
    if (this.gate) this.gate.audio(pcm, this.client);
    else this.client?.sendAudio(pcm);
  }

  onEvent(event) {
    const view = this.view;
    switch (event.type) {
      case "input_audio_buffer.speech_started":
        this.setSpeaking(true, "Speaking");
        view.turn(event.item_id);
        break;
      case "input_audio_buffer.speech_stopped":
        this.setSpeaking(false, "Listening");
        this.speechEnds.set(event.item_id, this.client.clock.timeOf(event.audio_end_ms) ?? performance.now());
        this.client.clock.forgetBefore(event.audio_end_ms);
        view.speechStopped(event.item_id);
        break;
      case "input_audio_buffer.committed": // a push-to-talk turn has no speech events
        view.speechStopped(event.item_id);
        break;
      case "conversation.item.input_audio_transcription.partial":
        view.partial(event.item_id, event.transcript);
        break;
      case "conversation.item.input_audio_transcription.delta":
        view.delta(event.item_id, event.delta);
        break;
      case "conversation.item.input_audio_transcription.completed": {
        const ended = this.speechEnds.get(event.item_id);
        this.speechEnds.delete(event.item_id);
        view.completed(event.item_id, event.transcript ?? "", ended == null ? null : performance.now() - ended);
        break;
      }
      case "conversation.item.input_audio_transcription.failed":
        view.failed(event.item_id, event.error?.message ?? "unknown error");
        break;
      case "response.created":
        view.replyStarted(event.response.id);
        break;
      case "response.output_text.delta":
        view.replyDelta(event.response_id, event.delta);
        break;
      case "response.output_text.done":
        view.replyText(event.response_id, event.text);
        break;
      case "response.done":
        view.replyDone(event.response.id, event.response.status);
        break;
      case "error":
        showMessage(this.ui["live-message"], "The server reported a problem.", event.error?.message ?? "", "info");
        break;
    }
  }

  onState(state, info = {}) {
    const chip = this.ui.connection;
    if (state === "unsupported") {
      console.info(`live mode falls back to the WebSocket: ${info.detail}`);
      this.webSocketOnly = true;
      this.client = this.newClient();
      this.client.connect();
      return;
    }
    chip.dataset.state = state;
    if (state === "connecting") {
      chip.textContent = info.attempt ? "Reconnecting…" : "Connecting…";
    } else if (state === "open") {
      chip.textContent = "Live";
      chip.dataset.transport = this.client instanceof WebRtcClient ? "webrtc" : "websocket";
      chip.title = this.client instanceof WebRtcClient ? "Connected over WebRTC" : "Connected over a WebSocket";
      hideMessage(this.ui["live-message"]);
      if (this.gate) this.gate.opened(this.client);
      else this.setSpeaking(false, "Listening");
    } else if (state === "retrying") {
      if (info.reason === "unreachable") this.checkKey();
      const seconds = Math.round(info.delayMs / 1000);
      chip.textContent = `Reconnecting in ${seconds} s`;
      const [title, detail] = RETRY_MESSAGES[info.reason];
      const why = info.reason === "refused" && info.detail ? `${info.detail}. ` : detail ? `${detail} ` : "";
      showMessage(this.ui["live-message"], title, `${why}Trying again in ${seconds} s; press Stop to give up.`);
      this.view.abandonPending("connection lost");
      this.speechEnds.clear();
      this.setSpeaking(false, "Waiting for the server");
    } else {
      chip.dataset.state = "idle";
      chip.textContent = "Not connected";
    }
  }

  /** A socket that never opened may have been refused for its key (the browser cannot tell). */
  async checkKey() {
    if (await apiKey.check()) return;
    await this.stop();
    showMessage(this.ui["live-message"], "The server refused the API key.", "Enter a valid key above, then press Start.");
  }

  setRunning(running) {
    this.running = running;
    const toggle = this.ui["live-toggle"];
    toggle.setAttribute("aria-pressed", String(running));
    toggle.querySelector(".label").textContent = running ? "Stop" : "Start";
    if (!running) this.gate = null;
    this.onRunningChange?.(running);
  }

  setSpeaking(active, label) {
    this.ui.speaking.dataset.active = String(active);
    this.ui.speaking.querySelector(".label").textContent = label;
  }

  showLevel(pcm) {
    const samples = new Int16Array(pcm);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length) / 32768;
    const db = 20 * Math.log10(rms || 1e-6);
    this.ui.level.style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
  }

  async fillMicrophones() {
    const select = this.ui.mic;
    const chosen = select.value;
    const microphones = await listMicrophones();
    select.replaceChildren(new Option("Default microphone", ""));
    for (const mic of microphones) select.add(new Option(mic.label, mic.id));
    select.value = microphones.some((m) => m.id === chosen) ? chosen : "";
  }
}
