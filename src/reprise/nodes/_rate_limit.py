"""Rate limits for model calls, shared by every node, run and process that calls one model.

::

    limit = RateLimit(requests_per_minute=600, tokens_per_minute=200_000, max_concurrency=8)
    node = AIModelNode(model="gpt-4o-mini", rate_limit=limit)
    ctx = RunContext("agent", ".", model_rate_limit=limit)     # or the default of a whole run

One limiter per provider, server and model (``per="server"``: per provider and server). Its state
is a small JSON file in ``<run root>/.model-calls/limits/``, changed under an exclusive ``flock``:
every process that shares the run root (the runs of a process, the worker processes of an
experiment, the workers of a Dask ``LocalCluster``) shares the limiter, and nothing has to be
started or stopped for it. A coordinating process was the alternative; it needs a life cycle
(who starts it, who cleans up after a crash), and the lock is held for a read and a write of a
few hundred bytes, which is little next to a model call. A process that dies holding a
concurrency slot loses it only until the slot's lease expires.

In a Dask worker the same state lives in the Dask scheduler instead, so the workers of a cluster
share it wherever they run: each change of the state runs in the scheduler
(``Client.run_on_scheduler``: one round trip, atomic, on the scheduler's clock) on a metadata
entry named after the limiter and the model-call directory (two run roots keep two limiters).
The scheduler must be able to import reprise.

The spacing is GCRA without a burst: each call reserves the next slot, ``60 / requests_per_minute``
seconds after the previous one (and ``60 * tokens / tokens_per_minute`` for its estimated
tokens), so calls are spread evenly over the minute instead of spent in a burst. A caller can
wake up late for its slot (a busy machine), and two late callers would then go together; so the
calls' actual starts are spaced as well, by a second GCRA that lets a late call catch up by at
most half an interval.

A 429 or 503 answer with ``Retry-After`` pauses the limiter for every caller until then; one
without it makes the caller back off (exponential, full jitter). Two rate-limited answers in a row
halve the limiter's rate (down to a twentieth); each call answered after that gives back a
fiftieth of the configured rate (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from anyio.lowlevel import RunVar

from reprise.errors import DefinitionError

__all__ = ["RateLimit", "RateLimiter"]

#: Directory of the limiters' state files, inside a run root's model-call directory.
LIMITS_DIR = "limits"

#: The rate never drops below this share of the configured one.
_MIN_FACTOR = 0.05
#: The share of the configured rate given back after each call answered.
_RECOVERY_STEP = 0.02
#: How often a caller looks again for a free concurrency slot held by another process.
_SLOT_POLL_S = 0.02
#: A slot whose holder neither released it nor finished in this time is free again.
_DEFAULT_LEASE_S = 600.0

_lease_ids = itertools.count()
#: Per event loop: the callers of this process that may look for a slot at once, by limiter.
_local_gates: RunVar[dict[str, anyio.Semaphore]] = RunVar("reprise_rate_limit_gates")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """How fast calls to one model may go.

    Args:
        requests_per_minute: calls per minute, spread evenly (``None``: no limit).
        tokens_per_minute: input plus output tokens per minute, estimated before a call from the
            prompt's length and ``max_tokens``, corrected by the usage the answer reports.
        max_concurrency: calls in flight at once, over all processes sharing the limiter.
        per: ``"model"`` (default): one limiter per provider, server and model; ``"server"``: one
            per provider and server, shared by all its models.
        max_retries: rate-limited answers (429, 503) a call waits out before it fails.
        backoff, max_backoff: without ``Retry-After``, wait a random time up to
            ``backoff * 2**n`` seconds (at most ``max_backoff``) before try ``n + 1``.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int | None = None
    per: Literal["model", "server"] = "model"
    max_retries: int = 8
    backoff: float = 1.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise DefinitionError(f"RateLimit({name}={value!r}): must be > 0 or None")
        if self.per not in ("model", "server"):
            raise DefinitionError(f"RateLimit(per={self.per!r}): must be 'model' or 'server'")
        if self.max_retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise DefinitionError("RateLimit: max_retries, backoff and max_backoff must be >= 0")

    def key(self, provider: str, server: str, model: str) -> str:
        """The limiter this limit applies to."""
        return f"{provider} {server}" if self.per == "server" else f"{provider} {server} {model}"

    def backoff_delay(self, retry: int) -> float:
        """Seconds before try ``retry + 1`` when the server said nothing: full jitter."""
        return random.uniform(0.0, min(self.max_backoff, self.backoff * 2.0 ** max(0, retry - 1)))


@dataclass(slots=True)
class Lease:
    """A call's slot: release it with :meth:`RateLimiter.release` when the call is answered."""

    id: str
    tokens: int
    epoch: int


class RateLimiter:
    """The limiter named ``key``, its state in ``state_dir`` or, in a Dask worker, in the Dask
    scheduler (see the module docstring)."""

    def __init__(self, state_dir: Path, key: str) -> None:
        self.key = key
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = state_dir / LIMITS_DIR / f"{digest}.json"
        #: In a Dask worker: the scheduler's metadata entry holding the state.
        self.dask_name: str | None = None
        if _in_dask_worker():
            self.dask_name = "reprise-limit-" + hashlib.sha256(f"{state_dir}\0{key}".encode()).hexdigest()[:24]

    async def acquire(self, limit: RateLimit, tokens: int, lease_s: float | None = None) -> Lease:
        """Wait until a call may start: first for its slot in the rate, then for a concurrency
        slot (only calls under way hold one), which is held until :meth:`release`."""
        gate = self._gate(limit)
        lease_s = lease_s or _DEFAULT_LEASE_S
        async with gate if gate is not None else contextlib.nullcontext():
            while True:
                wait, epoch = self._reserve(limit, tokens)
                await anyio.sleep(wait)
                if epoch is None:
                    continue  # paused: reserve after the pause
                while True:
                    lease, retry = self._start(limit, tokens, epoch, lease_s)
                    if lease is not None:
                        return lease
                    if retry is None:
                        break  # the limiter was paused meanwhile: the slot is void, take a new one
                    await anyio.sleep(retry)

    def release(
        self,
        lease: Lease,
        limit: RateLimit,
        *,
        rate_limited: bool = False,
        retry_after: float | None = None,
        tokens_used: int | None = None,
    ) -> None:
        """Give the slot back, saying how the call went: answered (the rate recovers a little),
        or rate limited (pause every caller for ``retry_after``; two in a row halve the rate)."""
        self._apply(_release, limit, lease.id, lease.tokens, rate_limited, retry_after, tokens_used)

    # -- state -------------------------------------------------------------------------------
    def _gate(self, limit: RateLimit) -> anyio.Semaphore | None:
        """At most ``max_concurrency`` callers of this process look for a slot at once (the
        others wait here without touching the shared state)."""
        if limit.max_concurrency is None:
            return None
        gates = _local_gates.get(None)
        if gates is None:
            gates = {}
            _local_gates.set(gates)
        gate = gates.get(self.key)
        if gate is None:
            gate = gates[self.key] = anyio.Semaphore(limit.max_concurrency)
        return gate

    def _reserve(self, limit: RateLimit, tokens: int) -> tuple[float, int | None]:
        if not limit.requests_per_minute and not (limit.tokens_per_minute and tokens > 0):
            return 0.0, -1  # no rate: only the pause and the concurrency slot apply (see _start)
        result: tuple[float, int | None] = self._apply(_reserve, limit, tokens)
        return result

    def _start(self, limit: RateLimit, tokens: int, epoch: int, lease_s: float) -> tuple[Lease | None, float | None]:
        lease_id = f"{os.getpid()}-{next(_lease_ids)}"
        started, wait = self._apply(_start, limit, epoch, lease_id, lease_s)
        return (Lease(lease_id, tokens, epoch) if started else None), wait

    def _apply(self, transition: Callable[..., Any], *args: Any) -> Any:
        """``transition(state, *args)`` on the shared state, atomically: under the file's lock,
        or in the Dask scheduler (one round trip; the scheduler runs it between two of its own
        steps, and its clock is then the one all times of the state are on)."""
        if self.dask_name is not None:
            client = sys.modules["distributed"].get_client()
            return client.run_on_scheduler(_on_scheduler, self.dask_name, transition, args)
        with self._file_state() as state:
            return transition(state, *args)

    @contextlib.contextmanager
    def _file_state(self) -> Iterator[dict[str, Any]]:
        """The state, read and written back under an exclusive lock of its file. An unreadable
        file (a writer died half-way) reads as a fresh limiter."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = _parse(os.pread(fd, 1 << 20, 0))
            yield state
            data = json.dumps(state, separators=(",", ":")).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)  # releases the lock


# -- the transitions of a limiter's state (run where the state is) ------------------------------
def _reserve(state: dict[str, Any], limit: RateLimit, tokens: int) -> tuple[float, int | None]:
    """The seconds to wait for the call's slot in the rate and the epoch it was reserved in
    (``None``: the limiter is paused for that long)."""
    now = time.time()
    if state["paused_until"] > now:
        return state["paused_until"] - now, None
    factor = state["factor"]
    start = now
    if limit.requests_per_minute:
        start = max(now, state["tat"])
        state["tat"] = start + 60.0 / (limit.requests_per_minute * factor)
    if limit.tokens_per_minute and tokens > 0:
        token_start = max(now, state["tokens_tat"])
        state["tokens_tat"] = token_start + tokens * 60.0 / (limit.tokens_per_minute * factor)
        start = max(start, token_start)
    return start - now, state["epoch"]


def _start(
    state: dict[str, Any], limit: RateLimit, epoch: int, lease_id: str, lease_s: float
) -> tuple[bool, float | None]:
    """At the call's slot: ``(True, None)`` with its lease taken; else how long to wait for a
    concurrency slot; ``(False, None)`` when a pause voided the slot (``epoch`` ``-1``: a limit
    without a rate has no slot to void)."""
    now = time.time()
    if (epoch != -1 and state["epoch"] != epoch) or state["paused_until"] > now:
        return False, None if epoch != -1 else max(0.0, state["paused_until"] - now)
    leases: dict[str, float] = {k: v for k, v in state["leases"].items() if v > now}
    state["leases"] = leases
    if limit.max_concurrency is not None and len(leases) >= limit.max_concurrency:
        return False, _SLOT_POLL_S
    if limit.requests_per_minute:
        interval = 60.0 / (limit.requests_per_minute * state["factor"])
        early = state["start_tat"] - interval / 2 - now
        if early > 0:
            return False, early
        state["start_tat"] = max(now, state["start_tat"]) + interval
    leases[lease_id] = now + lease_s
    return True, None


def _release(
    state: dict[str, Any],
    limit: RateLimit,
    lease_id: str,
    lease_tokens: int,
    rate_limited: bool,
    retry_after: float | None,
    tokens_used: int | None,
) -> None:
    now = time.time()
    state["leases"].pop(lease_id, None)
    tpm = limit.tokens_per_minute
    if tpm and tokens_used is not None and tokens_used != lease_tokens:
        state["tokens_tat"] += (tokens_used - lease_tokens) * 60.0 / (tpm * state["factor"])
    if not rate_limited:
        state["strikes"] = 0
        state["factor"] = min(1.0, state["factor"] + _RECOVERY_STEP)
        return
    state["strikes"] += 1
    if state["strikes"] >= 2:
        state["factor"] = max(_MIN_FACTOR, state["factor"] / 2)
        state["strikes"] = 0
    if retry_after is not None and now + retry_after > state["paused_until"]:
        state["paused_until"] = now + retry_after
        # Slots reserved before the pause are void: their holders reserve again, spaced from
        # the end of the pause, instead of all going at once when it ends.
        state["epoch"] += 1
        state["tat"] = state["tokens_tat"] = state["start_tat"] = state["paused_until"]


def _in_dask_worker() -> bool:
    """Whether this code runs in a task of a Dask worker (``distributed`` is then imported)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _on_scheduler(name: str, transition: Callable[..., Any], args: tuple[Any, ...], dask_scheduler: Any) -> Any:
    """Run in the Dask scheduler (``Client.run_on_scheduler``): the state is the scheduler's
    metadata entry ``name``; a synchronous function, so no other transition interleaves."""
    raw = dask_scheduler.get_metadata([name], default=None)
    state = _parse(raw.encode() if isinstance(raw, str) else b"")
    result = transition(state, *args)
    dask_scheduler.set_metadata([name], json.dumps(state, separators=(",", ":")))
    return result


def _parse(raw: bytes) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if raw:
        with contextlib.suppress(ValueError):
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                state = loaded
    fresh: dict[str, Any] = {
        "tat": 0.0,
        "start_tat": 0.0,
        "tokens_tat": 0.0,
        "paused_until": 0.0,
        "factor": 1.0,
        "strikes": 0,
        "epoch": 0,
        "leases": {},
    }
    for name, default in fresh.items():
        if type(state.get(name)) is not type(default):
            state[name] = default
    return state
