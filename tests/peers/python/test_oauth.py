"""The official Python SDK (mcp) against erlmcp in auth.mode = "oauth".

The authorization server is oidc-provider (tests/peers/oauth/provider.mjs,
run with node); the client is the SDK's ClientCredentialsOAuthProvider as
the httpx auth of the Streamable HTTP transport. It discovers erlmcp's
protected resource metadata from the 401, then the provider's metadata,
gets a token for erlmcp's resource and calls tools; a reader's tools/list
is filtered and its write is refused.

    python test_oauth.py legacy|auto

Environment (tests/peers/run sets it): PEER_BIN, PEER_DATA_DIR,
PEER_LOG_DIR, PEER_PORT, PEER_NODE (the node binary), MCP_NODE_MODULES.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

from mcp import Client
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

HERE = Path(__file__).resolve().parent
step = "start"


class Mismatch(Exception):
    pass


def check(cond: bool, message: str) -> None:
    if not cond:
        raise Mismatch(message)


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(500):
        check(proc.poll() is None, "erlmcp exited at start-up (see erlmcp.log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise Mismatch("erlmcp did not start")


def client(resource: str, issuer: str, who: str, secret: str, scope: str, mode: str) -> tuple[Client, Memory]:
    storage = Memory()
    auth = ClientCredentialsOAuthProvider(
        server_url=resource,
        storage=storage,
        client_id=who,
        client_secret=secret,
        scope=scope,
        issuer=issuer,
    )
    http = create_mcp_http_client(auth=auth)
    return Client(streamable_http_client(resource, http_client=http), mode=mode), storage


async def main(mode: str) -> None:
    global step
    data = Path(os.environ["PEER_DATA_DIR"])
    logs = Path(os.environ.get("PEER_LOG_DIR", data))
    port = int(os.environ["PEER_PORT"])
    resource = f"http://127.0.0.1:{port}/mcp"

    step = "start oidc-provider"
    provider = subprocess.Popen(
        [os.environ["PEER_NODE"], str(HERE.parent / "oauth" / "provider.mjs"), str(free_port()), resource],
        stdout=subprocess.PIPE,
        stderr=open(logs / "provider.log", "ab"),
    )
    line = provider.stdout.readline().decode() if provider.stdout else ""
    check(line.startswith("ready "), f"oidc-provider did not start: {line!r}")
    issuer = line.split()[1]

    step = "start erlmcp"
    config = data / "erlmcp.toml"
    config.write_text(f'[auth]\nmode = "oauth"\n[auth.oauth]\nissuer = "{issuer}"\nresource = "{resource}"\n')
    server = subprocess.Popen(
        [os.environ["PEER_BIN"], "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
         "--ops-listen", "127.0.0.1:0", "--data-dir", str(data / "db")],
        stdout=subprocess.DEVNULL,
        stderr=open(logs / "erlmcp.log", "ab"),
    )
    try:
        wait_port(port, server)

        step = f"writer: the SDK's OAuth flow (client credentials, mode={mode})"
        writer, storage = client(resource, issuer, "mcp-writer", "writer-secret-for-tests-only",
                                 "memory:read memory:write", mode)
        async with writer as c:
            names = sorted(t.name for t in (await c.list_tools()).tools)
            check("create_entities" in names and "read_graph" in names, f"writer's tools: {names}")
            step = "writer: tools/call create_entities"
            r = await c.call_tool("create_entities", {"entities": [
                {"name": f"py-oauth-{mode}", "entityType": "test", "observations": ["via oidc-provider"]}]})
            check(not r.is_error, f"create_entities: {r}")
        check(storage.tokens is not None, "the SDK stored no token")

        step = f"reader: tools/list filtered, write refused (mode={mode})"
        reader, _ = client(resource, issuer, "mcp-reader", "reader-secret-for-tests-only", "memory:read", mode)
        async with reader as c:
            names = sorted(t.name for t in (await c.list_tools()).tools)
            check("read_graph" in names and "create_entities" not in names, f"reader's tools: {names}")
            r = await c.call_tool("read_graph", {})
            check(not r.is_error and f"py-oauth-{mode}" in str(r.structured_content), f"read_graph: {r}")
            refused = False
            try:
                r = await c.call_tool("create_entities", {"entities": []})
                refused = r.is_error
            except Exception as e:  # the SDK raises on the 403
                refused = True
                print(f"reader's write refused: {type(e).__name__}: {e}")
            check(refused, "the reader could call create_entities")
        print(f"ok: python {mode}: client credentials via oidc-provider, scopes enforced")
    finally:
        server.terminate()
        provider.terminate()
        server.wait(10)
        provider.wait(10)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("legacy", "auto"):
        sys.exit("usage: test_oauth.py legacy|auto")
    warnings.simplefilter("default")
    try:
        asyncio.run(main(sys.argv[1]))
    except BaseException as e:
        inner: BaseException = e
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        print(f"python oauth {sys.argv[1]}: FAILED at {step}:", file=sys.stderr)
        if isinstance(inner, Mismatch):
            print(inner, file=sys.stderr)
        else:
            traceback.print_exception(inner)
        sys.exit(1)
