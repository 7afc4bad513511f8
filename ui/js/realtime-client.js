// One live transcription connection to the edge's `/v1/realtime` (OpenAI Realtime protocol,
// GA transcription session), reconnecting by itself until closed.
//
// States reported to `onState(state, info)`:
//   "connecting"                       opening the WebSocket (info.attempt counts retries)
//   "open"                             session configured: audio may flow
//   "retrying"  {reason, delayMs}      disconnected; next attempt after delayMs
//   "closed"                           closed by `close()`
// `reason` is "unreachable" (never opened), "full" (closed with 1013), "lost" (dropped after
// opening) or "refused" (closed by the server with a policy or protocol error).

import { AudioClock } from "./audio-clock.js";
import { toBase64 } from "./base64.js";
import { SessionClient } from "./session-client.js";

const TRY_AGAIN_LATER = 1013;

export function realtimeUrl(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime?intent=transcription`;
}

export class RealtimeClient extends SessionClient {
  /**
   * @param {{url: string, session: () => object, rate: number, onEvent: (event: object) => void,
   *          onState: (state: string, info?: object) => void, protocols?: () => string[]}} options
   */
  constructor({ url, session, rate, onEvent, onState, protocols = () => [] }) {
    super({ session, onEvent, onState });
    Object.assign(this, { url, rate, protocols });
    this.socket = null;
    this.clock = new AudioClock();
  }

  /** Send PCM16 audio; dropped (returns false) while the session is not configured. */
  sendAudio(pcm) {
    if (!this.ready) return false;
    this.send({ type: "input_audio_buffer.append", audio: toBase64(pcm) });
    this.clock.sent((pcm.byteLength / 2 / this.rate) * 1000);
    return true;
  }

  hangUp() {
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "client closed");
  }

  open() {
    this.onState("connecting", { attempt: this.failures });
    const socket = new WebSocket(this.url, this.protocols());
    let opened = false;
    this.socket = socket;
    this.clock = new AudioClock();
    socket.onopen = () => {
      opened = true;
    };
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    socket.onclose = (event) => {
      if (socket !== this.socket || this.closed) return;
      this.retry(closeReason(event, opened), { code: event.code, detail: event.reason });
    };
  }

  send(event) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }
}

function closeReason(event, opened) {
  if (event.code === TRY_AGAIN_LATER) return "full";
  if (!opened) return "unreachable";
  if (event.code === 1008 || event.code === 1002 || event.code === 1003) return "refused";
  return "lost";
}
