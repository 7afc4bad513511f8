// AudioWorklet processor: microphone audio (any context rate) → mono PCM16 at the session's rate,
// posted to the page in chunks of `chunkMs` as transferable ArrayBuffers.
//
// Resampling averages the input over each output sample's time span (a box filter), which
// also keeps speech frequencies above the new Nyquist limit from folding back when downsampling.

class Pcm16Writer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, chunkMs } = options.processorOptions;
    this.span = sampleRate / targetRate; // input samples per output sample
    this.left = this.span; // input still needed to complete the current output sample
    this.sum = 0;
    this.chunkLength = Math.round((targetRate * chunkMs) / 1000);
    this.chunk = new Int16Array(this.chunkLength);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (const channel of channels) x += channel[i];
      x /= channels.length;
      let remaining = 1;
      while (remaining > 0) {
        const take = Math.min(remaining, this.left);
        this.sum += x * take;
        this.left -= take;
        remaining -= take;
        if (this.left <= 1e-9) {
          this.write(this.sum / this.span);
          this.sum = 0;
          this.left += this.span;
        }
      }
    }
    return true;
  }

  write(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = Math.round(clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff);
    if (this.filled === this.chunkLength) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new Int16Array(this.chunkLength);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm16-writer", Pcm16Writer);
