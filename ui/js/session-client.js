// What both live transports share (realtime-client.js: WebSocket; webrtc-client.js: WebRTC): the
// session's opening handshake (configure on `session.created`, open on `session.updated`), the
// client events sent while open, and reconnecting with backoff until closed.
//
// A subclass provides `open()` (start a connection), `send(event)` (if connected), `hangUp()`
// (drop the connection) and `sendAudio(pcm)`.

const MAX_DELAY_MS = 15000;
const FULL_DELAY_MS = 5000;

export class SessionClient {
  /** @param {{session: () => object, onEvent: (event: object) => void, onState: (state: string, info?: object) => void}} options */
  constructor({ session, onEvent, onState }) {
    Object.assign(this, { session, onEvent, onState });
    this.ready = false;
    this.closed = false;
    this.everOpened = false;
    this.failures = 0;
    this.retryTimer = null;
  }

  connect() {
    this.closed = false;
    this.open();
  }

  /** Send the current settings to a configured session (they apply at once). */
  updateSession() {
    if (this.ready) this.send({ type: "session.update", session: this.session() });
  }

  /** End the turn in progress now instead of waiting for a pause. */
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

  /** Report "retrying" with `info` and open again after a backoff (longer when the server is full). */
  retry(reason, info = {}) {
    this.ready = false;
    this.hangUp();
    this.failures += 1;
    const backoff = Math.min(500 * 2 ** this.failures, MAX_DELAY_MS);
    const delayMs = reason === "full" ? Math.max(backoff, FULL_DELAY_MS) : backoff;
    this.onState("retrying", { reason, delayMs, ...info });
    this.retryTimer = setTimeout(() => this.open(), delayMs);
  }
}
