"""A stdio MCP server with tools that behave well and badly, for agentd's tests.

    python toolbox.py [--start-delay SECONDS] [--starts FILE] [--junk] [--http]

--start-delay: sleep before serving (a server slow to start). --starts: append
its pid to FILE at each start (the tests count restarts and look for the
process). --junk: print a line that is not JSON-RPC on stdout before serving.
--http: serve streamable HTTP on a loopback port of its own choosing, printed
as the first line on stdout, instead of stdio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, TextContent

parser = argparse.ArgumentParser()
parser.add_argument("--start-delay", type=float, default=0.0)
parser.add_argument("--starts")
parser.add_argument("--junk", action="store_true")
parser.add_argument("--http", action="store_true")
options = parser.parse_args()

if options.starts:
    with open(options.starts, "a") as f:
        f.write(f"{os.getpid()}\n")
if options.start_delay:
    time.sleep(options.start_delay)
if options.junk:
    print("this line is not JSON-RPC", flush=True)

app = MCPServer("toolbox")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def echo(text: str) -> str:
    """Say the text back."""
    print(f"echo: {text}", file=sys.stderr, flush=True)
    return text


@app.tool()
def header(name: str, ctx: Context) -> str:
    """A header of the HTTP request that carried this call ("" over stdio)."""
    return (ctx.headers or {}).get(name, "")


@app.tool()
async def grow(ctx: Context) -> str:
    """Add the tool `shout`, and tell the client the tools changed."""

    def shout(text: str) -> str:
        """The text in capitals."""
        return text.upper()

    app.add_tool(shout)
    await ctx.session.send_tool_list_changed()
    return "grown"


@app.tool()
def token() -> str:
    """The TOOLBOX_TOKEN it was given, as a careless server might say it."""
    return f"using token {os.environ.get('TOOLBOX_TOKEN', '')}"


@app.tool()
def where() -> str:
    """The server's working directory, and which of some variables it has."""
    names = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOOLBOX_TOKEN", "PATH")
    present = ",".join(name for name in names if name in os.environ)
    return f"cwd={os.getcwd()} env={present}"


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@app.tool()
def picture() -> list[TextContent | ImageContent]:
    """A caption and a small PNG."""
    return [TextContent(text="a one-pixel picture"), ImageContent(data=PNG, mime_type="image/png")]


@app.tool()
def refuse(reason: str) -> str:
    """Fail with the reason."""
    raise ToolError(reason)


@app.tool()
def big(chars: int) -> str:
    """A result of `chars` characters."""
    return "x" * chars


@app.tool()
def crash() -> str:
    """The server dies in the middle of the call."""
    os._exit(3)


@app.tool()
async def never() -> str:
    """Never answers."""
    await anyio.sleep_forever()
    return ""


@app.tool()
def spawn() -> str:
    """Start a child that outlives a polite stop (it ignores SIGTERM); its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
    )
    return str(child.pid)


def serve_http() -> None:
    import socket

    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    print(listener.getsockname()[1], flush=True)
    server = uvicorn.Server(uvicorn.Config(app.streamable_http_app(), log_level="warning"))
    anyio.run(lambda: server.serve(sockets=[listener]))


if options.http:
    serve_http()
else:
    app.run()
