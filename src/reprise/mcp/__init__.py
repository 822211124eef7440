"""``reprise mcp``: an MCP server over a run root, for LLM agents (see docs/mcp.md).

Needs the MCP SDK: ``pip install 'reprise-agents[mcp]'``. ``import reprise`` never imports it.
"""

from reprise.mcp._server import MUTATING_TOOLS, build_server

__all__ = ["MUTATING_TOOLS", "build_server"]
