// One live session over WebRTC, OpenAI's browser transport: the microphone's track goes to the
// edge as Opus over RTP, and the realtime protocol's events travel on the `oai-events` data
// channel. Same interface and states as RealtimeClient (realtime-client.js), reconnecting by
// itself until closed, plus one more state:
//   "unsupported" {detail}   WebRTC cannot work here (no RTCPeerConnection, a server without
//                            /v1/realtime/calls, or no network path for it): use the WebSocket.
// It is only reported before a call ever opened; later losses are retried like the WebSocket's.

const CALLS_PATH = "/v1/realtime/calls";
const CONNECT_TIMEOUT_MS = 8000;
const MAX_DELAY_MS = 15000;
const FULL_DELAY_MS = 5000;

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

export class WebRtcClient {
  /**
   * @param {{track: () => MediaStreamTrack, session: () => object, headers: () => object,
   *          onEvent: (event: object) => void, onState: (state: string, info?: object) => void}} options
   */
  constructor({ track, session, headers, onEvent, onState }) {
    Object.assign(this, { track, session, headers, onEvent, onState });
    this.pc = null;
    this.channel = null;
    this.ready = false;
    this.closed = false;
    this.everOpened = false;
    this.failures = 0;
    this.retryTimer = null;
    this.connectTimer = null;
    this.clock = new StreamClock();
  }

  static supported() {
    return typeof RTCPeerConnection === "function";
  }

  connect() {
    this.closed = false;
    this.open();
  }

  /** The audio travels on the track: chunks are only counted as sent while the call is live. */
  sendAudio() {
    return this.ready;
  }

  updateSession() {
    if (this.ready) this.send({ type: "session.update", session: this.session() });
  }

  commit() {
    if (this.ready) this.send({ type: "input_audio_buffer.commit" });
  }

  close() {
    this.closed = true;
    this.ready = false;
    clearTimeout(this.retryTimer);
    this.hangUp();
    this.onState("closed");
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

  receive(event) {
    if (event.type === "session.created") {
      this.send({ type: "session.update", session: this.session() });
    } else if (event.type === "session.updated" && !this.ready) {
      this.ready = true;
      this.everOpened = true;
      this.failures = 0;
      this.onState("open");
    }
    this.onEvent(event);
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
    this.ready = false;
    this.hangUp();
    this.failures += 1;
    const backoff = Math.min(500 * 2 ** this.failures, MAX_DELAY_MS);
    const delayMs = reason === "full" ? Math.max(backoff, FULL_DELAY_MS) : backoff;
    this.onState("retrying", { reason, delayMs, detail });
    this.retryTimer = setTimeout(() => this.open(), delayMs);
  }

  send(event) {
    if (this.channel?.readyState === "open") this.channel.send(JSON.stringify(event));
  }
}
