// Microphone capture: getUserMedia → AudioWorklet → PCM16 chunks at a chosen rate.

// The worklet's code is fetched with the page, so that pressing Start while the server is away
// leads to the connection's retry messages rather than a failure to load the worklet.
const workletUrl = fetch(new URL("./pcm-worklet.js", import.meta.url))
  .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(response.statusText))))
  .then((code) => URL.createObjectURL(code));
workletUrl.catch(() => {}); // a failure is reported when Start needs the worklet

/** The audio inputs the browser reports (labels appear once access was granted). */
export async function listMicrophones() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((device) => device.kind === "audioinput" && device.deviceId && device.deviceId !== "default")
    .map((device, i) => ({ id: device.deviceId, label: device.label || `Microphone ${i + 1}` }));
}

export class Microphone {
  /**
   * @param {{deviceId: string, rate: number, chunkMs: number, onChunk: (pcm: ArrayBuffer) => void}} options
   */
  constructor({ deviceId, rate, chunkMs, onChunk }) {
    Object.assign(this, { deviceId, rate, chunkMs, onChunk });
    this.stream = null;
    this.context = null;
  }

  /** Ask for the microphone and start producing chunks; rejects with a MicrophoneError. */
  async start() {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new MicrophoneError(
        "The microphone is not available on this page.",
        "Browsers only allow microphone access on https:// pages and on localhost. Open the service over HTTPS, or through localhost (an SSH tunnel works).",
      );
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { deviceId: this.deviceId ? { exact: this.deviceId } : undefined, channelCount: 1 },
      });
    } catch (error) {
      throw microphoneError(error);
    }
    this.context = new AudioContext();
    await this.context.audioWorklet.addModule(await workletUrl);
    const source = this.context.createMediaStreamSource(this.stream);
    const writer = new AudioWorkletNode(this.context, "pcm16-writer", {
      numberOfOutputs: 0,
      processorOptions: { targetRate: this.rate, chunkMs: this.chunkMs },
    });
    writer.port.onmessage = (event) => this.onChunk(event.data);
    source.connect(writer);
  }

  async stop() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
    await this.context?.close();
    this.context = null;
  }
}

export class MicrophoneError extends Error {
  constructor(title, detail) {
    super(title);
    this.detail = detail;
  }
}

function microphoneError(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicrophoneError(
        "Microphone access was denied.",
        "Allow this site to use the microphone (in most browsers: the icon at the left of the address bar), then press Start again.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicrophoneError("No microphone was found.", "Connect a microphone, or choose another one in the list.");
    case "NotReadableError":
      return new MicrophoneError(
        "The microphone could not be opened.",
        "Another application may be using it, or the system blocks it. Close the other application and try again.",
      );
    default:
      return new MicrophoneError("The microphone could not be started.", String(error?.message ?? error));
  }
}
