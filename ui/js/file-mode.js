// File mode: pick or drop a file, or paste a URL; transcribe it with progress; show the text
// with segment times; download it as SRT, VTT, TXT or JSON.

import { download } from "./download.js";
import { hideMessage, showMessage } from "./message.js";
import { displayTime, parseSubtitles, toSrt, toVtt } from "./subtitles.js";
import { transcribe } from "./transcription-request.js";

const STREAMABLE = new Set(["json", "text"]);

export class FileMode {
  constructor(doc) {
    const $ = (id) => doc.getElementById(id);
    this.ui = {
      form: $("file-form"), dropzone: $("dropzone"), input: $("file-input"), name: $("file-name"), url: $("file-url"),
      format: $("file-format"), language: $("file-language"), stream: $("file-stream"), submit: $("file-submit"),
      progress: $("file-progress"), bar: $("file-progress-bar"), label: $("file-progress-label"), cancel: $("file-cancel"),
      message: $("file-message"), result: $("file-result"), meta: $("file-meta"), segments: $("segments"), text: $("file-text"),
    };
    this.file = null;
    this.request = null;
    this.result = null;
    this.bind(doc);
    this.formatChanged();
  }

  bind(doc) {
    const ui = this.ui;
    ui.input.addEventListener("change", () => this.choose(ui.input.files[0] ?? null));
    ui.url.addEventListener("input", () => ui.url.value && this.choose(null, { keepUrl: true }));
    ui.format.addEventListener("change", () => this.formatChanged());
    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    ui.cancel.addEventListener("click", () => this.request?.cancel());
    for (const type of ["dragenter", "dragover"]) {
      ui.dropzone.addEventListener(type, (event) => {
        event.preventDefault();
        ui.dropzone.dataset.over = "true";
      });
    }
    ui.dropzone.addEventListener("dragleave", () => (ui.dropzone.dataset.over = "false"));
    ui.dropzone.addEventListener("drop", (event) => {
      event.preventDefault();
      ui.dropzone.dataset.over = "false";
      if (event.dataTransfer.files[0]) this.choose(event.dataTransfer.files[0]);
    });
    for (const button of doc.querySelectorAll("[data-download]")) {
      button.addEventListener("click", () => this.save(button.dataset.download));
    }
  }

  choose(file, { keepUrl = false } = {}) {
    this.file = file;
    this.ui.name.textContent = file ? `${file.name} · ${megabytes(file.size)}` : "";
    if (file && !keepUrl) this.ui.url.value = "";
    if (!file) this.ui.input.value = "";
  }

  formatChanged() {
    const streamable = STREAMABLE.has(this.ui.format.value);
    this.ui.stream.disabled = !streamable;
    if (!streamable) this.ui.stream.checked = false;
  }

  async submit() {
    const ui = this.ui;
    const url = ui.url.value.trim();
    hideMessage(ui.message);
    if (!this.file && !url) {
      showMessage(ui.message, "Nothing to transcribe yet.", "Choose or drop a file, or paste the URL of one.", "info");
      return;
    }
    const form = new FormData();
    if (this.file) form.append("file", this.file);
    else form.append("url", url);
    form.append("model", "whisper-1");
    form.append("response_format", ui.format.value);
    if (ui.language.value) form.append("language", ui.language.value);
    if (ui.stream.checked) form.append("stream", "true");

    const format = ui.format.value;
    const name = baseName(this.file?.name ?? url);
    this.showResult(null);
    let streamed = "";
    const uploading = Boolean(this.file); // a URL's form is sent in a blink: its upload is no step to show
    this.busy(true, uploading ? "Uploading…" : "Fetching and transcribing…", !uploading);
    this.request = transcribe(form, {
      onUploadProgress: (fraction) => uploading && this.progress(`Uploading… ${Math.round(fraction * 100)}%`, fraction),
      onUploaded: () => uploading && this.progress("Transcribing…", null),
      onDelta: (delta) => {
        streamed += delta;
        this.showResult({ name, format, text: streamed, segments: null, json: null }, true);
      },
    });
    try {
      const { body, stream } = await this.request.done;
      this.showResult(stream ? { name, format, text: stream.text, segments: null, json: stream } : parse(body, format, name));
    } catch (error) {
      showMessage(ui.message, error.message, error.detail);
    } finally {
      this.request = null;
      this.busy(false);
    }
  }

  busy(on, label = "", indeterminate = false) {
    const ui = this.ui;
    ui.submit.disabled = on;
    ui.progress.hidden = !on;
    clearInterval(this.ticker);
    if (!on) return;
    this.started = performance.now();
    this.progress(label, indeterminate ? null : 0);
    this.ticker = setInterval(() => this.progress(this.label), 1000);
  }

  /** Show `label` (with the time spent so far) and a fraction, or an indeterminate bar for null. */
  progress(label, fraction) {
    this.label = label;
    const elapsed = Math.floor((performance.now() - this.started) / 1000);
    this.ui.label.textContent = elapsed >= 2 ? `${label} ${elapsed} s` : label;
    if (fraction === null) this.ui.bar.removeAttribute("value");
    else if (fraction !== undefined) this.ui.bar.value = fraction * 100;
  }

  showResult(result, partial = false) {
    const ui = this.ui;
    this.result = partial ? null : result;
    ui.result.hidden = !result;
    if (!result) return;
    ui.segments.replaceChildren(...(result.segments ?? []).map(segmentItem));
    ui.text.textContent = result.segments ? "" : result.text;
    const facts = [];
    if (result.json?.duration != null) facts.push(`${displayTime(result.json.duration)} of audio`);
    if (result.segments) facts.push(`${result.segments.length} segment${result.segments.length === 1 ? "" : "s"}`);
    facts.push(partial ? "transcribing…" : result.format);
    ui.meta.textContent = facts.join(" · ");
    for (const button of ui.result.querySelectorAll("[data-download]")) {
      const needsTimes = ["srt", "vtt"].includes(button.dataset.download);
      button.disabled = partial || (needsTimes && !result.segments);
      button.title = button.disabled && needsTimes && !partial ? "Choose a format with timestamps to get subtitles" : "";
    }
  }

  save(kind) {
    const r = this.result;
    if (!r) return;
    const files = {
      srt: () => [toSrt(r.segments), "application/x-subrip"],
      vtt: () => [toVtt(r.segments), "text/vtt"],
      txt: () => [`${r.text.trim()}\n`, "text/plain"],
      json: () => [JSON.stringify(r.json ?? { text: r.text, segments: r.segments }, null, 2), "application/json"],
    };
    const [text, type] = files[kind]();
    download(`${r.name}.${kind}`, text, type);
  }
}

/** The transcript in a response body of the given format. */
function parse(body, format, name) {
  if (format === "json" || format === "verbose_json") {
    const json = JSON.parse(body);
    const segments = json.segments?.map(({ start, end, text }) => ({ start, end, text })) ?? null;
    return { name, format, text: json.text, segments, json };
  }
  if (format === "srt" || format === "vtt") {
    const segments = parseSubtitles(body);
    return { name, format, text: segments.map((s) => s.text).join(" "), segments, json: null };
  }
  return { name, format, text: body, segments: null, json: null };
}

function segmentItem(segment) {
  const item = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = `${displayTime(segment.start)} – ${displayTime(segment.end)}`;
  time.dateTime = `PT${segment.start.toFixed(3)}S`;
  const text = document.createElement("span");
  text.textContent = segment.text.trim();
  item.append(time, text);
  return item;
}

function baseName(source) {
  const last = source.split(/[?#]/)[0].split("/").filter(Boolean).pop() ?? "";
  return last.replace(/\.[^.]+$/, "") || "transcript";
}

function megabytes(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}
