"""``reprise mcp``: an MCP server over a run root, for LLM agents (see docs/mcp.md).

``import reprise`` never imports this package. It needs the MCP SDK, an extra of the
distribution: ``pip install 'reprise-agents[mcp]'``
"""

from reprise.mcp._server import MUTATING_TOOLS, build_server

__all__ = ["MUTATING_TOOLS", "build_server"]
