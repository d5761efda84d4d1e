"""MCP servers the tests start: real ones, written with the SDK's own server side (MCPServer, once FastMCP)."""
