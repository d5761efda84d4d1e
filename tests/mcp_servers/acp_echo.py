"""An MCP server on stdio with one tool, `echo`: what an ACP editor's `mcpServers` entry starts in the tests."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("acp-echo")


@app.tool()
def echo(text: str) -> str:
    """Say `text` back."""
    return text


if __name__ == "__main__":
    app.run()
