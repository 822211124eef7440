"""A worker process of ``LocalExecutor(isolation="process")``: ``python -m reprise.experiments._worker``.

It reads jobs from its standard input and writes results to its standard output, as
length-prefixed pickles, and runs each job inside its own ``anyio.run``. Both descriptors are
moved aside at start-up and the standard streams pointed elsewhere (stdout to stderr, stdin to
``/dev/null``), so a node that prints cannot corrupt the protocol. Messages:

* parent → worker: ``("hello", {"sys_path": [...]})``, then ``("job", ItemJob)`` any number of times;
  end of input means "exit".
* worker → parent: ``("started", run_id)`` once the run directory exists, then ``("done", ItemResult)``.

A crash (``os._exit``, a segfault) simply ends the process: the parent sees the end of the
stream and records the item as crashed. ``faulthandler`` writes a segfault's Python stack to
stderr (the experiment's ``workers.log``).
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import sys
import threading
import time
from functools import partial
from typing import IO, Any

from reprise.experiments._wire import HEADER, decode_header, encode_message

__all__ = ["main"]


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_message(stream: IO[bytes]) -> Any:
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    body = _read_exactly(stream, decode_header(header))
    if body is None:
        return None
    return pickle.loads(body)


def _write_message(stream: IO[bytes], message: Any) -> None:
    data = memoryview(encode_message(message))
    while data:
        written = stream.write(data)
        data = data[written or 0 :]
    stream.flush()


def _watch_parent() -> None:
    """Exit when the parent is gone (it was killed): an orphaned worker would run on forever."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="reprise-parent-watch", daemon=True).start()


def _run_job(job: Any, out: IO[bytes]) -> Any:
    import anyio

    from reprise.errors import RunCancelledError
    from reprise.experiments._item import lost_result, run_item

    holder: list[Any] = []
    t0 = time.perf_counter()
    run_ids: list[str] = []

    def started(run_id: str) -> None:
        run_ids.append(run_id)
        _write_message(out, ("started", run_id))

    try:
        return anyio.run(partial(run_item, job, on_started=started, on_cancelled=holder.append), backend=job.backend)
    except BaseException:
        if holder:
            return holder[0]
        return lost_result(
            job,
            "cancelled",
            RunCancelledError("cancelled before the run started"),
            run_id=run_ids[0] if run_ids else None,
            duration_s=time.perf_counter() - t0,
        )


def main() -> None:
    """Serve jobs until the standard input ends."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    faulthandler.enable()
    try:
        import resource

        # A deliberate segfault in a test (or a real one) must not leave core files behind.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    _watch_parent()
    while True:
        try:
            message = _read_message(proto_in)
        except KeyboardInterrupt:
            return
        if message is None:
            return
        kind, body = message
        if kind == "hello":
            for entry in reversed(body.get("sys_path", [])):
                if entry not in sys.path:
                    sys.path.insert(0, entry)
        elif kind == "job":
            result = _run_job(body, proto_out)
            try:
                _write_message(proto_out, ("done", result))
            except KeyboardInterrupt:
                return


if __name__ == "__main__":
    main()
