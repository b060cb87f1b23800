"""A real webhook receiver on 127.0.0.1 for the delivery tests: records what arrives, answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Received:
    headers: dict[str, str]
    body: str

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each request with `answer(n, webhook_id)` -> (status, delay in seconds); n counts requests from 1."""

    answer: Callable[[int, str], tuple[int, float]] = lambda _n, _id: (204, 0.0)
    received: list[Received] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                expected = int(self.headers["content-length"])
                raw = self.rfile.read(expected)
                if len(raw) < expected:  # the sender died mid-request: nothing was delivered
                    self.close_connection = True
                    return
                body = raw.decode()
                with lock:
                    receiver.requests += 1
                    status, delay = receiver.answer(receiver.requests, self.headers["webhook-id"])
                if delay:
                    time.sleep(delay)
                if 200 <= status < 300:
                    with lock:
                        receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/c360"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def verified_events(self, secret: str = SECRET) -> list[dict[str, Any]]:
        """Every accepted event, each checked against its Standard Webhooks signature (raises if one is wrong)."""
        verifier = Webhook(secret)
        return [verifier.verify(r.body, r.headers) for r in self.received]
