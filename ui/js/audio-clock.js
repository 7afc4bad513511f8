// When each stretch of the session's audio was sent, so that a position the server reports in
// audio milliseconds (`audio_end_ms`) can be turned back into the moment it left the browser.

export class AudioClock {
  constructor() {
    this.sentMs = 0;
    this.marks = []; // [{endMs, at}] in sending order
  }

  /** Record that `durationMs` more audio was sent just now. */
  sent(durationMs) {
    this.sentMs += durationMs;
    this.marks.push({ endMs: this.sentMs, at: performance.now() });
  }

  /** `performance.now()` when audio position `ms` was sent, or null if not (or no longer) known. */
  timeOf(ms) {
    const mark = this.marks.find((m) => m.endMs >= ms);
    return mark ? mark.at : null;
  }

  /** Drop what is no longer needed: marks that end before audio position `ms`. */
  forgetBefore(ms) {
    const keep = this.marks.findIndex((m) => m.endMs >= ms);
    this.marks = keep < 0 ? [] : this.marks.slice(keep);
  }
}
