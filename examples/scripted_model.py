"""A scripted OpenAI-compatible model server on 127.0.0.1, for examples and tests that must run
offline: it answers ``POST /v1/chat/completions`` with whatever a Python function says.

::

    def answer(request: ChatRequest) -> str | Reply:
        return "positive" if "love" in request.user else "negative"

    with ScriptedModelServer(answer) as server:
        model = ChatModel("scripted", base_url=server.base_url)   # reprise.optim
        ...

The official ``openai`` client talks to it like to any server; ``Reply`` sends an HTTP error or a
body that is not a chat completion, to see how a caller copes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["ChatRequest", "Reply", "ScriptedModelServer"]


@dataclass(frozen=True)
class ChatRequest:
    """One request as the server saw it: the model name, the system and user messages, the body."""

    model: str
    system: str
    user: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A reply other than a normal completion: ``status`` and a JSON (dict) or raw (str) body."""

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class ScriptedModelServer:
    """Serves on a free loopback port from ``__enter__`` to ``__exit__``. ``requests`` lists every
    :class:`ChatRequest` received, in order."""

    def __init__(self, answer: Callable[[ChatRequest], str | Reply]) -> None:
        self.answer = answer
        self.requests: list[ChatRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give a client (``http://127.0.0.1:PORT/v1``)."""
        if self._server is None:
            raise RuntimeError("the server is not running: use it in a with-block")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _respond(self, path: str, body: dict[str, Any]) -> Reply:
        if not path.endswith("/chat/completions"):
            return Reply(404, {"error": {"message": f"no such endpoint {path}"}})
        messages = body.get("messages", [])
        request = ChatRequest(
            model=str(body.get("model", "")),
            system="\n".join(m["content"] for m in messages if m.get("role") == "system"),
            user="\n".join(m["content"] for m in messages if m.get("role") == "user"),
            body=body,
        )
        with self._lock:
            self.requests.append(request)
        answer = self.answer(request)
        return answer if isinstance(answer, Reply) else Reply(200, _completion(request.model, answer))

    def __enter__(self) -> ScriptedModelServer:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                reply = state._respond(self.path, json.loads(raw))
                data = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None
