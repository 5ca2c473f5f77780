"""A JSON webhook receiver on loopback, for Apprise's ``json://`` notifications."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A JSON webhook receiver: records every POST, answers with the next status of ``plan``."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.plan: list[int] = []  # statuses to answer, in order; then 200
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.gate.wait(30)
                with receiver._lock:
                    receiver.posts.append(json.loads(body))
                    status = receiver.plan.pop(0) if receiver.plan else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
