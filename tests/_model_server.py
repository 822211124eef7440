"""A model server on 127.0.0.1 for tests: it answers like OpenAI (``/v1/chat/completions``) and
Anthropic (``/v1/messages``) do, so AI model nodes drive the real SDK clients against it.

It can also play a provider's rate limit (``serve_models(rate_per_s=20, concurrency=8,
delay=0.05)``): at most ``rate_per_s`` requests in any second and ``concurrency`` at once are
answered, each after ``delay`` seconds; beyond that it answers 429 with ``Retry-After`` at once.
``python tests/_model_server.py --rate-per-s 20 --concurrency 8 --delay 0.05`` serves until
stopped (SIGTERM), printing its URL, then its counts as JSON (the benchmarks run it so)."""

from __future__ import annotations

import collections
import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes -> sent as is
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelServer:
    """Answers like OpenAI and Anthropic do. Queued replies go first; then a default answer."""

    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    text: str = "Hello from the model."
    structured: dict[str, Any] | None = None
    url: str = ""
    #: Answer at most this many requests in any second (``None``: any number) ...
    rate_per_s: float | None = None
    #: ... and this many at once; the others get 429 with Retry-After.
    concurrency: int | None = None
    #: Seconds each answered request takes.
    delay: float = 0.0
    #: Requests answered 429 by the rate limit above (queued replies not counted).
    rejected: int = 0
    answered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _window: collections.deque[float] = field(default_factory=collections.deque)
    _in_flight: int = 0

    def admit(self) -> Reply | None:
        """``None`` when the rate limit lets a request through (then :meth:`done` after it),
        else the 429 to send."""
        if self.rate_per_s is None and self.concurrency is None:
            return None
        now = time.monotonic()
        with self._lock:
            window = self._window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if self.rate_per_s is not None and len(window) >= self.rate_per_s:
                wait = window[0] + 1.0 - now
            elif self.concurrency is not None and self._in_flight >= self.concurrency:
                wait = self.delay
            else:
                window.append(now)
                self._in_flight += 1
                return None
            self.rejected += 1
        headers = {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, round(wait * 1000)))}
        return Reply(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}, headers=headers)

    def done(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self.answered += 1

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def respond(self, path: str, body: dict[str, Any], headers: dict[str, str], at: float | None = None) -> Reply:
        """The reply to a request that arrived ``at`` (default: now)."""
        self.requests.append({"path": path, "body": body, "headers": headers, "at": at or time.monotonic()})
        if self.replies:
            return self.replies.pop(0)
        if body.get("model") == "echo-key-401":
            # A misbehaving server that echoes the credentials it received in its error.
            key = headers.get("authorization", "") + headers.get("x-api-key", "")
            return Reply(401, {"error": {"message": f"invalid key {key}", "type": "authentication_error"}})
        if path.endswith("/chat/completions"):
            content = json.dumps(self.structured) if body.get("response_format") else self.text
            return Reply(
                body={
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": body["model"] + "-2024-08-06",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
                }
            )
        if path.endswith("/messages"):
            if body.get("tools"):
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": body["tools"][0]["name"],
                    "input": self.structured,
                }
                stop = "tool_use"
            else:
                block, stop = {"type": "text", "text": self.text}, "end_turn"
            return Reply(
                body={
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [block],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 20, "output_tokens": 7},
                }
            )
        return Reply(404, {"error": {"message": "not found"}})


@contextmanager
def serve_models(**settings: Any) -> Iterator[ModelServer]:
    """A :class:`ModelServer` listening on 127.0.0.1 (an ephemeral port) for the ``with`` block;
    ``settings`` are its fields (``rate_per_s``, ``concurrency``, ``delay``, ``text``, ...)."""
    state = ModelServer(**settings)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            arrived = time.monotonic()
            rejected = state.admit()
            if rejected is not None:
                state.requests.append({"path": self.path, "headers": headers, "at": arrived, "status": 429})
                reply = rejected
            else:
                try:
                    if state.delay:
                        time.sleep(state.delay)
                    reply = state.respond(self.path, json.loads(raw), headers, arrived)
                finally:
                    if state.rate_per_s is not None or state.concurrency is not None:
                        state.done()
            data = (
                reply.body
                if isinstance(reply.body, bytes)
                else (reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode())
            )
            # A misbehaving server: "$KEY" in a queued reply stands for the key it received.
            key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            data = data.replace(b"$KEY", key.encode())
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("content-length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value.replace("$KEY", key))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    """Serve until SIGTERM: the URL on the first line, the counts as JSON on the last."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="a rate-limited OpenAI-compatible model server on 127.0.0.1")
    parser.add_argument("--rate-per-s", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve_models(rate_per_s=args.rate_per_s, concurrency=args.concurrency, delay=args.delay) as served:
        print(served.url, flush=True)
        while not stop.wait(1.0):
            served.requests.clear()  # counted below; a long benchmark need not keep every body
        print(json.dumps({"answered": served.answered, "rejected": served.rejected}), flush=True)


if __name__ == "__main__":
    main()
