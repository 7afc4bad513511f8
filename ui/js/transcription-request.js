// POST /v1/audio/transcriptions with XMLHttpRequest, for its upload progress events; with
// `stream=true` the server-sent events are read as they arrive.

import { apiKey } from "./api-key.js";

const ENDPOINT = "/v1/audio/transcriptions";

export class RequestError extends Error {
  constructor(title, detail = "") {
    super(title);
    this.detail = detail;
  }
}

/**
 * Send `form`; resolves with `{body, stream}`: the response text, or for a stream the final
 * `transcript.text.done` event. Callbacks: onUploadProgress(fraction), onUploaded(), onDelta(text).
 * Returns `{done: Promise, cancel()}`.
 */
export function transcribe(form, { onUploadProgress, onUploaded, onDelta }) {
  const xhr = new XMLHttpRequest();
  const streaming = form.get("stream") === "true";
  let read = 0;
  let finished = null;
  let streamError = null;

  function readEvents() {
    const text = xhr.responseText;
    let end;
    while ((end = text.indexOf("\n\n", read)) >= 0) {
      const data = text
        .slice(read, end)
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trim())
        .join("\n");
      read = end + 2;
      if (!data) continue;
      const event = JSON.parse(data);
      if (event.error) streamError = event.error;
      else if (event.type === "transcript.text.delta") onDelta(event.delta);
      else if (event.type === "transcript.text.done") finished = event;
    }
  }

  const done = new Promise((resolve, reject) => {
    xhr.open("POST", ENDPOINT);
    for (const [name, value] of Object.entries(apiKey.headers())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => event.lengthComputable && onUploadProgress(event.loaded / event.total);
    xhr.upload.onload = () => onUploaded();
    xhr.onprogress = () => streaming && xhr.status < 400 && readEvents();
    xhr.onerror = () =>
      reject(new RequestError("Cannot reach the server.", "Check that the service is running and reachable, then try again."));
    xhr.onabort = () => reject(new RequestError("Cancelled.", "The transcription was stopped."));
    xhr.onload = () => {
      if (xhr.status >= 400) return reject(httpError(xhr));
      if (!streaming) return resolve({ body: xhr.responseText, stream: null });
      readEvents();
      if (streamError) return reject(new RequestError("The transcription failed.", streamError.message ?? ""));
      if (!finished) return reject(new RequestError("The transcription ended early.", "The server closed the stream before the end."));
      resolve({ body: null, stream: finished });
    };
    xhr.send(form);
  });
  return { done, cancel: () => xhr.abort() };
}

function httpError(xhr) {
  if (xhr.status === 401) {
    apiKey.refused();
    return new RequestError("The server needs a valid API key.", "Enter one above, then try again.");
  }
  let message = xhr.statusText;
  try {
    message = JSON.parse(xhr.responseText).error.message;
  } catch {
    // Not OpenAI's error shape (a proxy's error page, say): keep the status text.
  }
  const title =
    xhr.status === 413 ? "The file is too large or too long." :
    xhr.status >= 500 ? `The server could not transcribe this (error ${xhr.status}).` :
    `The server refused the request (error ${xhr.status}).`;
  return new RequestError(title, message);
}
