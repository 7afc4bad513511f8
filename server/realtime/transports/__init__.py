"""The connections a realtime session runs over: WebSocket and the raw TCP stream (I/O only;
`server.realtime.runner` runs the session)."""
