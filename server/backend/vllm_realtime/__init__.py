"""A client of vLLM's own `/v1/realtime` WebSocket (streaming transcription with Voxtral Realtime).

`protocol` holds vLLM's event shapes, `connection` the WebSocket transport, `stream` the lossless
continuous stream (generations ended at item boundaries and restarted before `max_model_len`), and
`probe` tells whether a vLLM serves a realtime-capable model.
"""
