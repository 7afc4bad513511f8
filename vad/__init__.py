"""Speech detection with Silero VAD on onnxruntime (no web code, no dependency on server/)."""
