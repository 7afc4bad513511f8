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


class CrashingBackend:
    """Lists the model like vLLM, then answers every other request with a 500 (an engine failure)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._reply(200, {"object": "list", "data": [{"id": SERVED_MODEL, "object": "model"}]})
                else:
                    self._reply(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                self._reply(500, {"error": {"message": "EngineCore died", "type": "InternalServerError", "code": 500}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PriorityRefusingBackend:
    """An older vLLM (before 0.32, or V1 before it had priorities), which refuses a non-zero
    `priority` with a 400 when it is not scheduling by priority; vLLM 0.32 ignores it instead.
    Answers chat completions (plain and streamed) and records the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                models = {"object": "list", "data": [{"id": SERVED_MODEL, "object": "model"}]}
                self._reply(200, json.dumps(models).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                backend.bodies.append(body)
                if body.get("priority", 0) != 0:
                    message = f"Got priority {body['priority']} but Priority scheduling is not enabled."
                    error = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
                    self._reply(400, json.dumps(error).encode())
                    return
                choice = {"index": 0, "finish_reason": "stop"}
                if body.get("stream"):
                    chunk = {"choices": [{**choice, "delta": {"content": "hello"}}]}
                    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
                    events = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
                    self._reply(200, events.encode(), "text/event-stream")
                    return
                reply = {
                    "object": "chat.completion",
                    "model": SERVED_MODEL,
                    "choices": [{**choice, "message": {"role": "assistant", "content": "hello"}}],
                }
                self._reply(200, json.dumps(reply).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
