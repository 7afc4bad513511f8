// The OpenAI Node SDK's realtime client (`openai/realtime/ws`) against the edge over wss.
// Usage: node realtime_wss.mjs BASE_URL API_KEY PCM16_24KHZ_FILE
// Prints one JSON line: {"created": bool, "transcripts": [...]} or {"error": "..."}.
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const [baseURL, apiKey, pcmFile] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey });
const rt = new OpenAIRealtimeWS({ model: "whisper-1" }, client);
const result = { url: rt.url.toString(), created: false, transcripts: [] };
const finish = (extra = {}) => {
  console.log(JSON.stringify({ ...result, ...extra }));
  rt.socket.terminate();
  process.exit(0);
};
setTimeout(() => finish({ error: "timed out" }), 120_000);

rt.socket.on("unexpected-response", (_req, res) => finish({ error: `handshake refused: HTTP ${res.statusCode}` }));
rt.on("error", (err) => finish({ error: String(err.message ?? err) }));
rt.on("session.created", () => {
  result.created = true;
  rt.send({
    type: "session.update",
    session: {
      type: "transcription",
      audio: { input: { format: { type: "audio/pcm", rate: 24000 }, turn_detection: { type: "server_vad" } } },
    },
  });
});
rt.on("session.updated", () => {
  const pcm = readFileSync(pcmFile);
  for (let i = 0; i < pcm.length; i += 4800) {
    rt.send({ type: "input_audio_buffer.append", audio: pcm.subarray(i, i + 4800).toString("base64") });
  }
});
rt.on("conversation.item.input_audio_transcription.completed", (event) => {
  result.transcripts.push(event.transcript);
  finish();
});
