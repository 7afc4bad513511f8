"""Failure injectors: stand-ins for a vLLM that hangs or crashes, which a real vLLM cannot be made
to do on demand, and for an older vLLM that refuses request priorities, which vLLM 0.32 never
does. They are used only to test the edge's handling of those failures; everything else is
tested against the real vLLM.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import SERVED_MODEL


class HungBackend:
    """Accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


MODELS = {"object": "list", "data": [{"id": SERVED_MODEL, "object": "model"}]}


class _Handler(BaseHTTPRequestHandler):
    """Answers JSON quietly; `GET /v1/models` lists the model like vLLM."""

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes | dict, content_type: str = "application/json") -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self.reply(200, MODELS)
        else:
            self.reply(404, {"error": {"message": "no such route"}})


class _StandIn:
    """A stand-in HTTP server on a loopback port, serving `handler` in a thread."""

    def __init__(self, handler: type[_Handler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CrashingBackend(_StandIn):
    """Lists the model like vLLM, then answers every other request with a 500 (an engine failure)."""

    def __init__(self) -> None:
        class Handler(_Handler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.reply(500, {"error": {"message": "EngineCore died", "type": "InternalServerError", "code": 500}})

        super().__init__(Handler)


class PriorityRefusingBackend(_StandIn):
    """An older vLLM (before 0.32, or V1 before it had priorities), which refuses a non-zero
    `priority` with a 400 when it is not scheduling by priority; vLLM 0.32 ignores it instead.
    Answers chat completions (plain and streamed) and records the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        bodies = self.bodies

        class Handler(_Handler):
            def do_GET(self) -> None:
                self.reply(200, MODELS)  # on every path, /health included

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                bodies.append(body)
                if body.get("priority", 0) != 0:
                    message = f"Got priority {body['priority']} but Priority scheduling is not enabled."
                    self.reply(
                        400, {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
                    )
                    return
                choice = {"index": 0, "finish_reason": "stop"}
                if body.get("stream"):
                    chunk = {"choices": [{**choice, "delta": {"content": "hello"}}]}
                    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
                    events = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
                    self.reply(200, events.encode(), "text/event-stream")
                    return
                self.reply(
                    200,
                    {
                        "object": "chat.completion",
                        "model": SERVED_MODEL,
                        "choices": [{**choice, "message": {"role": "assistant", "content": "hello"}}],
                    },
                )

        super().__init__(Handler)
