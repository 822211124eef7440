"""A model server on 127.0.0.1 for tests: it answers like OpenAI (``/v1/chat/completions``) and
Anthropic (``/v1/messages``) do, so AI model nodes drive the real SDK clients against it."""

from __future__ import annotations

import json
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

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def respond(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        self.requests.append({"path": path, "body": body, "headers": headers, "at": time.monotonic()})
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
def serve_models() -> Iterator[ModelServer]:
    """A :class:`ModelServer` listening on 127.0.0.1 (an ephemeral port) for the ``with`` block."""
    state = ModelServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = state.respond(self.path, json.loads(raw), headers)
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
