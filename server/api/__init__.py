"""The HTTP and WebSocket app: its services, routes, access control, error handlers and the limits
on what uvicorn takes from a client."""
