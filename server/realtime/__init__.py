"""Live sessions: audio in, VAD turns, transcripts out, and in conversation sessions text replies and tool calls.

The core is protocol- and transport-independent: `session.py` decodes, buffers and detects turns,
and drives a transcription engine through one interface (`transcription_engine.py`): whole turns
(`turn_engine.py`) or Voxtral Realtime streaming (`stream_engine.py`), chosen per session by
`engines.py`. It reports `events.py`'s events. `protocols/` translates between the core and the
wire (OpenAI Realtime, the simple `/ws`), `transports/` carries a session (WebSocket, raw TCP),
and `runner.py` runs one session over any transport with its limits, shedding and shutdown;
`admission.py` lets it in.
"""
