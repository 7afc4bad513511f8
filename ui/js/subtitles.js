// Transcript segments ({start, end, text}, seconds) to and from SRT and WebVTT, and plain text.

export function toSrt(segments) {
  return segments
    .map((s, i) => `${i + 1}\n${timestamp(s.start, ",")} --> ${timestamp(s.end, ",")}\n${s.text.trim()}\n`)
    .join("\n");
}

export function toVtt(segments) {
  const cues = segments.map((s) => `${timestamp(s.start, ".")} --> ${timestamp(s.end, ".")}\n${s.text.trim()}\n`);
  return ["WEBVTT\n", ...cues].join("\n");
}

/** Segments of an SRT or WebVTT document (cue numbers, headers and notes are skipped). */
export function parseSubtitles(document) {
  const segments = [];
  for (const block of document.replace(/\r/g, "").split(/\n{2,}/)) {
    const lines = block.split("\n");
    const at = lines.findIndex((line) => line.includes("-->"));
    if (at < 0) continue;
    const [start, end] = lines[at].split("-->").map((part) => seconds(part.trim().split(/\s+/)[0]));
    segments.push({ start, end, text: lines.slice(at + 1).join(" ").trim() });
  }
  return segments;
}

/** A short clock for display: m:ss.s, or h:mm:ss.s past an hour. */
export function displayTime(totalSeconds) {
  const tenths = Math.round(totalSeconds * 10);
  const h = Math.floor(tenths / 36000);
  const m = Math.floor((tenths % 36000) / 600);
  const s = ((tenths % 600) / 10).toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function timestamp(totalSeconds, separator) {
  const ms = Math.round(totalSeconds * 1000);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(Math.floor(ms / 3600000))}:${pad(Math.floor(ms / 60000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}${separator}${pad(ms % 1000, 3)}`;
}

function seconds(clock) {
  const parts = clock.replace(",", ".").split(":").map(Number);
  return parts.reduce((total, part) => total * 60 + part, 0);
}
