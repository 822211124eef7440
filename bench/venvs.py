"""One virtual environment per peer under ``bench/.venvs/<peer>/``: created on first use, reused after.

A venv is reused when its stamp file (``.bench-installed``) holds exactly the interpreter and the
requirement list below; change either and the venv is rebuilt. Peers are pinned so that figures
from two machines, or two dates, compare like with like.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BENCH_DIR", "PEERS", "PeerSpec", "VenvError", "ensure_venv", "find_python"]

BENCH_DIR = Path(__file__).resolve().parent
VENVS_DIR = BENCH_DIR / ".venvs"
STAMP = ".bench-installed"


class VenvError(RuntimeError):
    """A peer's venv could not be created or its packages could not be installed."""


@dataclass(frozen=True)
class PeerSpec:
    """What a peer needs: a Python minor version and pinned requirements."""

    system: str  # the ``system`` label in results.json
    python: str  # "3.11", "3.13", ...
    requirements: tuple[str, ...]


OTEL_136 = ("opentelemetry-sdk==1.36.0", "opentelemetry-api==1.36.0", "opentelemetry-exporter-otlp==1.36.0")

PEERS: dict[str, PeerSpec] = {
    # dhenara-agent 0.3.4 requires Python >= 3.13 and breaks with newer OpenTelemetry releases.
    "dhenara-agent": PeerSpec("dhenara-agent", "3.13", ("dhenara-agent==0.3.4", *OTEL_136)),
    # openai: the llm-ratelimited benchmark calls the model server through the official client.
    "langgraph": PeerSpec("langgraph", "3.11", ("langgraph==1.2.22", "openai==3.63.0")),
    "pydantic-graph": PeerSpec("pydantic-graph", "3.11", ("pydantic-graph==2.68.0",)),
    "burr": PeerSpec("burr", "3.11", ("burr[tracking-client]==0.42.0",)),
}


def find_python(minor: str) -> str | None:
    """An interpreter for Python ``minor`` ("3.13"): this one, then pyenv's versions, then PATH.

    Each candidate is asked for its version, because a pyenv shim on PATH exists for every
    version but only runs the ones the current pyenv setting enables."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        # The project's own interpreter: peers then run on the same Python as reprise.
        return getattr(sys, "_base_executable", None) or sys.executable
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(root, "versions", f"{minor}.*", "bin", "python3")), reverse=True)
    found = shutil.which(f"python{minor}")
    if found:
        candidates.append(found)
    for candidate in candidates:
        done = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == minor:
            return candidate
    return None


def venv_python(peer: str) -> Path:
    """The interpreter inside a peer's venv."""
    return VENVS_DIR / peer / "bin" / "python"


def ensure_venv(peer: str, log: Path | None = None) -> Path:
    """Create (or reuse) the venv for ``peer`` and return its interpreter; raise VenvError."""
    spec = PEERS[peer]
    base = find_python(spec.python)
    if base is None:
        raise VenvError(f"no Python {spec.python} found (PATH or ~/.pyenv/versions)")
    root = VENVS_DIR / peer
    want = json.dumps({"python": spec.python, "requirements": list(spec.requirements)}, sort_keys=True)
    stamp = root / STAMP
    py = venv_python(peer)
    if stamp.is_file() and stamp.read_text() == want and py.exists():
        return py
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        steps = [
            [base, "-m", "venv", str(root)],
            [str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(py), "-m", "pip", "install", "--quiet", *spec.requirements],
        ]
        for step in steps:
            done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                where = f" (log: {log})" if log is not None else ""
                raise VenvError(f"`{' '.join(step[:5])} ...` exited {done.returncode}{where}")
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    stamp.write_text(want)
    return py


def installed_versions(peer: str) -> dict[str, str]:
    """The versions of the pinned distributions actually installed in a peer's venv."""
    names = [r.split("==")[0] for r in PEERS[peer].requirements]
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(venv_python(peer)), "-c", code, *names], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {}


if __name__ == "__main__":
    # `python -m bench.venvs PEER...`: build venvs ahead of a benchmark run.
    for name in sys.argv[1:] or list(PEERS):
        try:
            print(name, ensure_venv(name, VENVS_DIR / f"{name}.log"))
        except VenvError as exc:
            print(name, "FAILED:", exc)
