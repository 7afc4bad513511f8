// The API key of servers that require one (`API_KEYS`): asks for it when the server answers 401,
// keeps it in this browser's localStorage (with a way to forget it), and hands it to file
// requests (Authorization header) and to realtime sockets (the `openai-insecure-api-key.<key>`
// subprotocol, OpenAI's browser convention, since browsers cannot set WebSocket headers).

const STORAGE = "voxtral.apiKey";
const PROBE = "/v1/models";

class ApiKey {
  constructor(doc) {
    this.doc = doc;
    this.form = doc.getElementById("api-key");
    this.input = doc.getElementById("api-key-input");
    this.message = doc.getElementById("api-key-message");
    this.open = doc.getElementById("api-key-open");
    this.form?.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    doc.getElementById("api-key-forget")?.addEventListener("click", () => this.forget());
    this.open?.addEventListener("click", () => this.show());
  }

  get value() {
    try {
      return localStorage.getItem(STORAGE) ?? "";
    } catch {
      return ""; // storage disabled: the page works without keys only
    }
  }

  /** Headers for HTTP requests to `/v1`. */
  headers() {
    return this.value ? { Authorization: `Bearer ${this.value}` } : {};
  }

  /** Subprotocols for a realtime socket: with a key, `realtime` (which the server selects) and the key. */
  subprotocols() {
    return this.value ? ["realtime", `openai-insecure-api-key.${this.value}`] : [];
  }

  /** Ask the server whether it needs a key (and takes ours); shows the prompt when it does not. */
  async check() {
    const status = await probe(this.value);
    if (status === 401) {
      this.show(this.value ? ["The server refused the saved API key.", "Enter a valid key."] : null);
    } else if (this.value) {
      this.open.hidden = false;
    }
    return status !== 401;
  }

  /** A request or socket was refused for its key: ask again. */
  refused() {
    this.show(["The server refused the API key.", "Enter a valid key."]);
  }

  show(problem = null) {
    this.form.hidden = false;
    this.open.hidden = true;
    this.input.value = this.value;
    if (problem) this.say(...problem);
    else this.message.hidden = true;
    this.input.focus();
  }

  async submit() {
    const key = this.input.value.trim();
    if (!key) return this.say("Enter an API key.", "");
    const status = await probe(key);
    if (status === 401) return this.say("This key was refused.", "Check it and try again.");
    try {
      localStorage.setItem(STORAGE, key);
    } catch {
      return this.say("This browser does not allow storing the key.", "Allow site data for this page.");
    }
    this.form.hidden = true;
    this.message.hidden = true;
    this.open.hidden = false;
    this.doc.dispatchEvent(new CustomEvent("api-key-changed"));
  }

  forget() {
    try {
      localStorage.removeItem(STORAGE);
    } catch {
      // nothing was stored
    }
    this.input.value = "";
    this.show(["Key forgotten.", "This browser no longer keeps it."]);
    this.message.dataset.kind = "info";
  }

  say(title, detail) {
    this.message.replaceChildren();
    const strong = this.doc.createElement("strong");
    strong.textContent = title;
    this.message.append(strong, detail);
    this.message.dataset.kind = "error";
    this.message.hidden = false;
  }
}

async function probe(key) {
  try {
    const response = await fetch(PROBE, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    return response.status;
  } catch {
    return 0; // unreachable: nothing to say about keys
  }
}

export const apiKey = new ApiKey(document);
