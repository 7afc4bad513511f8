"""Live transcription sessions: audio in, VAD turns, transcripts (and assistant replies) out.

`session.py` is the protocol-independent core; `openai_protocol.py` and `simple_protocol.py`
translate between it and the wire; `connection.py` runs one WebSocket with the session limits.
"""
