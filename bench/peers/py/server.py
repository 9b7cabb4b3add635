"""The Python SDK (`mcp` 2.3.0) peer: the conformance fixture tool
`test_simple_text`, over stdio or Streamable HTTP.

    python server.py stdio
    python server.py http --listen 127.0.0.1:PORT [--json]

HTTP is the SDK's own `MCPServer.streamable_http_app()` (Starlette) served
by uvicorn with one worker, stateful sessions (the SDK default), logging at
WARNING. `--json` sets `json_response=True`. uvicorn runs on asyncio, whose
TCP transports set TCP_NODELAY on every connection.
"""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent

TEXT = "This is a simple text response for testing."

server = MCPServer("py-sdk-peer", version="1.0.0", log_level="WARNING")


@server.tool(name="test_simple_text", description="Tests simple text content response")
def test_simple_text() -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=TEXT)])


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["stdio"]:
        server.run("stdio")
        return
    if args[:1] != ["http"]:
        sys.exit("usage: server.py stdio | server.py http --listen HOST:PORT [--json]")
    listen, json_response = "127.0.0.1:8000", False
    rest = iter(args[1:])
    for a in rest:
        if a == "--listen":
            listen = next(rest)
        elif a == "--json":
            json_response = True
        else:
            sys.exit(f"unknown argument {a}")
    host, port = listen.rsplit(":", 1)

    import uvicorn

    app = server.streamable_http_app(json_response=json_response, host=host)
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
