"""``reprise mcp``: serve the runs under a run root to LLM agents over MCP (stdio or HTTP)."""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from reprise.cli._common import EXIT_OK, Output, UsageError, add_common, run_root_of

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``mcp``."""
    p = subparsers.add_parser(
        "mcp",
        help="serve runs, alerts, metrics and experiments to LLM agents (MCP)",
        description="Start an MCP server (the official MCP SDK; pip install 'reprise-agents[mcp]') over "
        "stdio (for a client that starts it) or streamable HTTP on a loopback address (http://HOST:PORT/mcp). "
        "Its tools return the same JSON as the commands' --json data. Starting runs, experiments, re-runs "
        "and resumes is refused unless --allow-run is given.",
    )
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="default: stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP: a loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP: the port (default 8000)")
    p.add_argument("--allow-run", action="store_true", help="let clients start runs and experiments")
    p.add_argument("--project-root", metavar="DIR", help="where runs started by clients import from (default: .)")
    p.add_argument(
        "--experiments-dir", metavar="DIR", help="where experiment folders live (default: <project root>/experiments)"
    )
    add_common(p, json_flag=False)
    p.set_defaults(handler=_mcp)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _mcp(args: argparse.Namespace, out: Output) -> int:
    if args.transport == "http" and not _loopback(args.host):
        raise UsageError(f"--host {args.host}: the MCP server has no authentication; serve on a loopback address")
    try:
        from reprise.mcp import build_server
    except ImportError as exc:
        raise UsageError(f"reprise mcp needs the MCP SDK ({exc}): pip install 'reprise-agents[mcp]'") from None
    server = build_server(
        run_root_of(args),
        experiments_dir=args.experiments_dir,
        project_root=args.project_root,
        allow_run=args.allow_run,
    )
    if args.transport == "stdio":
        server.run("stdio")
    else:
        out.note(f"reprise mcp: serving {run_root_of(args)} on http://{args.host}:{args.port}/mcp")
        server.run("streamable-http", host=args.host, port=args.port)
    return EXIT_OK
