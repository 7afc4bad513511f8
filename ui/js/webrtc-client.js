// One live session over WebRTC, OpenAI's browser transport: the microphone's track goes to the
// edge as Opus over RTP, and the realtime protocol's events travel on the `oai-events` data
// channel. Same interface and states as RealtimeClient (realtime-client.js), reconnecting by
// itself until closed, plus one more state:
//   "unsupported" {detail}   WebRTC cannot work here (no RTCPeerConnection, a server without
//                            /v1/realtime/calls, or no network path for it): use the WebSocket.
// It is only reported before a call ever opened; later losses are retried like the WebSocket's.

import { SessionClient } from "./session-client.js";

const CALLS_PATH = "/v1/realtime/calls";
const CONNECT_TIMEOUT_MS = 8000;

/** The audio position the edge reports (`audio_end_ms`, on the RTP clock) → `performance.now()`. */
class StreamClock {
  constructor() {
    this.startedAt = null;
  }

  start() {
    this.startedAt ??= performance.now();
  }

  timeOf(ms) {
    return this.startedAt == null ? null : this.startedAt + ms;
  }

  forgetBefore() {}
}

export class WebRtcClient extends SessionClient {
  /**
   * @param {{track: () => MediaStreamTrack, session: () => object, headers: () => object,
   *          onEvent: (event: object) => void, onState: (state: string, info?: object) => void}} options
   */
  constructor({ track, session, headers, onEvent, onState }) {
    super({ session, onEvent, onState });
    Object.assign(this, { track, headers });
    this.pc = null;
    this.channel = null;
    this.connectTimer = null;
    this.clock = new StreamClock();
  }

  static supported() {
    return typeof RTCPeerConnection === "function";
  }

  /** The audio travels on the track: chunks are only counted as sent while the call is live. */
  sendAudio() {
    return this.ready;
  }

  hangUp() {
    clearTimeout(this.connectTimer);
    this.channel = null;
    this.pc?.close();
    this.pc = null;
  }

  async open() {
    this.onState("connecting", { attempt: this.failures });
    const pc = new RTCPeerConnection();
    const channel = pc.createDataChannel("oai-events");
    Object.assign(this, { pc, channel, clock: new StreamClock() });
    pc.addTrack(this.track());
    let opened = false;
    const current = () => pc === this.pc && !this.closed;
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") this.clock.start();
      if (current() && pc.connectionState === "failed") this.lost(opened ? "lost" : "no-path");
    };
    channel.onopen = () => {
      opened = true;
      clearTimeout(this.connectTimer);
      this.clock.start();
    };
    channel.onmessage = (message) => current() && this.receive(JSON.parse(message.data));
    channel.onclose = () => current() && this.lost(opened ? "lost" : "no-path");
    try {
      await pc.setLocalDescription(await pc.createOffer());
    } catch (error) {
      return current() && this.unsupported(`The browser could not make a WebRTC offer: ${error}`);
    }
    let response;
    try {
      response = await fetch(CALLS_PATH, {
        method: "POST",
        body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", ...this.headers() },
      });
    } catch {
      return current() && this.lost("unreachable");
    }
    if (!current()) return;
    if (response.status !== 201) return this.refused(response);
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    } catch (error) {
      return current() && this.unsupported(`The server's WebRTC answer was not usable: ${error}`);
    }
    this.connectTimer = setTimeout(() => current() && !opened && this.lost("no-path"), CONNECT_TIMEOUT_MS);
  }

  async refused(response) {
    let detail = "";
    try {
      detail = (await response.json()).error?.message ?? "";
    } catch {
      // not OpenAI's error shape: the status says enough
    }
    if ([404, 405, 415, 501].includes(response.status)) {
      return this.unsupported(`The server does not take WebRTC calls (${response.status}).`);
    }
    if (response.status === 401) return this.lost("unreachable", detail); // the key check tells
    if (response.status === 429 || response.status === 503) return this.lost("full", detail);
    return this.lost("refused", detail || `HTTP ${response.status}`);
  }

  /** WebRTC cannot be used: before any call opened, say so (the page falls back); later, retry. */
  unsupported(detail) {
    if (!this.everOpened) {
      this.hangUp();
      this.closed = true;
      this.onState("unsupported", { detail });
      return;
    }
    this.lost("lost", detail);
  }

  lost(reason, detail = "") {
    if (reason === "no-path") return this.unsupported("No network path for WebRTC to the server (ICE failed).");
    this.retry(reason, { detail });
  }

  send(event) {
    if (this.channel?.readyState === "open") this.channel.send(JSON.stringify(event));
  }
}
