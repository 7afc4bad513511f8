// The live transcript: one list item per turn, provisional text while it is spoken and
// transcribed, final text once complete, its latency, and the assistant's reply under it.
//
// Provisional text is hidden from assistive technology; the final text is added as a new node
// so the list's aria-live region announces each turn once, when it is final.

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export class TranscriptView {
  constructor(list, emptyNote) {
    this.list = list;
    this.emptyNote = emptyNote;
    this.turns = new Map(); // item_id → turn
    this.replies = new Map(); // response id → reply paragraph
    this.lastHeard = null; // the latest turn whose speech ended: a reply answers it
  }

  /** The turn for `itemId`, created at the end of the list when new. */
  turn(itemId) {
    let turn = this.turns.get(itemId);
    if (turn) return turn;
    const item = element("li", "turn");
    item.dataset.state = "speaking";
    item.dataset.itemId = itemId;
    const head = element("div", "turn-head");
    const time = element("time", "turn-time", timeFormat.format(new Date()));
    time.dateTime = new Date().toISOString();
    head.append(time);
    const text = element("p", "turn-text provisional", "Listening");
    text.setAttribute("aria-hidden", "true");
    item.append(head, text);
    turn = { item, head, text, partial: "", streamed: "" };
    this.turns.set(itemId, turn);
    this.follow(() => this.list.append(item));
    this.emptyNote.hidden = true;
    return turn;
  }

  speechStopped(itemId) {
    const turn = this.turn(itemId);
    if (turn.item.dataset.state === "speaking") turn.item.dataset.state = "transcribing";
    this.lastHeard = turn;
  }

  partial(itemId, transcript) {
    const turn = this.turn(itemId);
    turn.partial = transcript;
    this.showProvisional(turn);
  }

  delta(itemId, delta) {
    const turn = this.turn(itemId);
    turn.streamed += delta;
    this.showProvisional(turn);
  }

  completed(itemId, transcript, latencyMs) {
    const turn = this.turn(itemId);
    const said = transcript.trim();
    const text = element("p", said ? "turn-text final" : "turn-text empty-text", said || "(nothing recognised)");
    this.follow(() => turn.text.replaceWith(text));
    turn.text = text;
    turn.item.dataset.state = "final";
    if (latencyMs != null) {
      const latency = element("span", "latency", `${(latencyMs / 1000).toFixed(2)} s`);
      latency.title = "Time from the end of speech to the final text";
      latency.setAttribute("aria-label", `final after ${(latencyMs / 1000).toFixed(2)} seconds`);
      turn.head.append(latency);
    }
  }

  failed(itemId, message) {
    const turn = this.turn(itemId);
    const text = element("p", "turn-text failed", `Transcription failed: ${message}`);
    turn.text.replaceWith(text);
    turn.text = text;
    turn.item.dataset.state = "failed";
  }

  /** Turns still waiting for their text will never get it (the connection ended). */
  abandonPending(why) {
    for (const turn of this.turns.values()) {
      if (turn.item.dataset.state !== "speaking" && turn.item.dataset.state !== "transcribing") continue;
      turn.item.dataset.state = "interrupted";
      turn.text.classList.remove("provisional");
      turn.text.textContent = `${turn.streamed || turn.partial} (${why})`.trim();
    }
  }

  get pending() {
    return [...this.turns.values()].filter((t) => ["speaking", "transcribing"].includes(t.item.dataset.state)).length;
  }

  /** An assistant response begins: it answers the latest turn heard (its transcript may come later). */
  replyStarted(responseId) {
    const turn = this.lastHeard;
    if (!turn) return;
    const reply = element("div", "reply");
    const text = element("p", "reply-text");
    reply.append(element("span", "reply-label", "Assistant"), text);
    this.follow(() => turn.item.append(reply));
    this.replies.set(responseId, text);
  }

  replyDelta(responseId, delta) {
    const text = this.replies.get(responseId);
    if (text) this.follow(() => (text.textContent += delta));
  }

  /** The reply's complete text, replacing what was streamed. */
  replyText(responseId, finalText) {
    const text = this.replies.get(responseId);
    if (text) text.textContent = finalText;
  }

  replyDone(responseId, status) {
    const text = this.replies.get(responseId);
    if (text && status && status !== "completed") text.textContent += ` (${status})`;
    this.replies.delete(responseId);
  }

  clear() {
    this.list.replaceChildren();
    this.turns.clear();
    this.replies.clear();
    this.lastHeard = null;
    this.emptyNote.hidden = false;
  }

  showProvisional(turn) {
    const shown = turn.streamed || turn.partial;
    if (shown) this.follow(() => (turn.text.textContent = shown));
  }

  /** Apply a change, keeping the list scrolled to its end if it was there before. */
  follow(change) {
    const list = this.list;
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    change();
    if (atEnd) list.scrollTop = list.scrollHeight;
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text != null) node.textContent = text;
  return node;
}
