"""The Python MCP SDK client (`mcp` 2.3.0) against erlmcp's memory toolset.

    python test_memory.py stdio|http legacy|auto

`legacy` connects with the initialize handshake (a 2025-11-25 session);
`auto` (the SDK's default) sends `server/discover` first and then speaks the
stateless 2026-07-28 revision. Only `mcp` and the standard library are used.

Environment (tests/peers/run sets it):
    PEER_BIN       the erlmcp binary
    PEER_DATA_DIR  an empty directory for this run's database
    PEER_PORT      a free loopback port (http only)
    PEER_LOG_DIR   where `erlmcp serve` writes its log

Exits 1 with a message naming the first mismatch.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import mcp_types
from mcp import Client, MCPDeprecationWarning, MCPError, StdioServerParameters
from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated

HERE = Path(__file__).resolve().parent
EXPECTED_TOOLS: dict[str, Any] = json.loads((HERE.parent / "memory-tools.json").read_text())["tools"]

# The versions each mode must negotiate with erlmcp.
EXPECTED_VERSION = {"legacy": "2025-11-25", "auto": "2026-07-28"}


class Mismatch(Exception):
    pass


# Checks that once failed because of an erlmcp bug (lost notifications
# across a restart, fixed since); kept strict so it cannot come back.
bugs: list[str] = []


def must_hold(cond: Any, message: str) -> None:
    if not cond:
        raise Mismatch(message)


def check(cond: Any, message: str) -> None:
    if not cond:
        raise Mismatch(message)


def eq(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise Mismatch(
            f"{what}\n  expected: {json.dumps(expected, ensure_ascii=False)}"
            f"\n  actual:   {json.dumps(actual, ensure_ascii=False, default=str)}"
        )


step = "start"

# ---------------------------------------------------------------- the data


def entity(name: str, entity_type: str, *observations: str) -> dict[str, Any]:
    return {"name": name, "entityType": entity_type, "observations": list(observations)}


def relation(source: str, target: str, relation_type: str) -> dict[str, str]:
    return {"from": source, "to": target, "relationType": relation_type}


ALICE = entity("Alice", "person", "Works at Acme Corp", "Speaks Esperanto")
BOB = entity("Bob", "person", "Plays chess on weekends")
ACME = entity("Acme Corp", "organization", "Founded in 1999")
CLUB = entity("Chess Club", "organization", "Meets on Tuesdays")
EMILE = entity("Émile", "person", "Lives in Zürich")
ENTITIES = [ALICE, BOB, ACME, CLUB, EMILE]

R1 = relation("Alice", "Acme Corp", "works_at")
R2 = relation("Bob", "Chess Club", "member_of")
R3 = relation("Alice", "Bob", "knows")
R4 = relation("Émile", "Alice", "knows")

BOB2 = entity("Bob", "person", "Plays chess on weekends", "Learning Esperanto")
EMILE2 = entity("Émile", "person", "Lives in Zürich", "Speaks French")

FINAL = {
    "entities": [entity("Alice", "person", "Works at Acme Corp"), BOB, ACME, EMILE2],
    "relations": [R1, R4],
}
MARKER = entity("Restart Marker", "marker", "written before SIGKILL")
WITH_MARKER = {"entities": [*FINAL["entities"], MARKER], "relations": FINAL["relations"]}

GRAPH_URI = "memory://knowledge-graph"


def entity_uri(name: str) -> str:
    return "memory://entities/" + quote(name, safe="")


# ---------------------------------------------------------------- helpers


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def call_ok(client: Client, name: str, args: dict[str, Any]) -> Any:
    global step
    step = f"tools/call {name}"
    r = await client.call_tool(name, args)
    check(not r.is_error, f"{name}({json.dumps(args, ensure_ascii=False)}) returned isError: {text_of(r)}")
    check(r.structured_content is not None, f"{name} returned no structuredContent")
    texts = [c for c in r.content if c.type == "text"]
    check(texts, f"{name} returned no text content")
    if not name.startswith("delete_"):
        eq(json.loads(texts[0].text), r.structured_content, f"{name}: text content is the structured content")
    return r.structured_content


async def call_error(client: Client, name: str, args: dict[str, Any]) -> str:
    global step
    step = f"tools/call {name} (expecting isError)"
    r = await client.call_tool(name, args)
    check(r.is_error is True, f"{name}({json.dumps(args)}) should be isError: true, got {r.model_dump_json()}")
    return text_of(r)


async def expect_mcp_error(code: int, what: str, coro: Any) -> None:
    try:
        await coro
    except MCPError as e:
        eq(e.code, code, f"{what}: JSON-RPC error code (message: {e.message})")
        return
    raise Mismatch(f"{what} should fail with JSON-RPC error {code}")


async def all_resources(client: Client) -> tuple[list[Any], int]:
    resources: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        # The default cache mode: at 2026-07-28 the client caches list and
        # read results for the ttlMs the server gives. The memory resources
        # change with every write, so erlmcp must not let them go stale.
        r = await client.list_resources(cursor=cursor)
        resources.extend(r.resources)
        pages += 1
        check(pages <= 20, "resources/list keeps returning a nextCursor")
        cursor = r.next_cursor
        if cursor is None:
            return resources, pages


async def read_text(client: Client, uri: str) -> Any:
    r = await client.read_resource(uri)
    eq(len(r.contents), 1, f"{uri}: one content")
    c = r.contents[0]
    eq(str(c.uri), uri, f"{uri}: content uri")
    eq(c.mime_type, "application/json", f"{uri}: mimeType")
    return json.loads(c.text)


# ---------------------------------------------------------------- the flow


async def memory_flow(client: Client) -> None:
    """Every memory tool and resource, from an empty graph to FINAL."""
    global step
    step = "tools/list"
    listed = await client.list_tools()
    check(listed.next_cursor is None, "tools/list has a second page for 9 tools")
    eq(sorted(t.name for t in listed.tools), sorted(EXPECTED_TOOLS), "tool names")
    for t in listed.tools:
        want = EXPECTED_TOOLS[t.name]
        eq(t.input_schema, want["inputSchema"], f"inputSchema of {t.name}")
        eq(t.title, want["title"], f"title of {t.name}")
        eq(t.description, want["description"], f"description of {t.name}")
        annotations = t.annotations.model_dump(by_alias=True, exclude_none=True) if t.annotations else None
        eq(annotations, want["annotations"], f"annotations of {t.name}")
        check((t.output_schema or {}).get("type") == "object", f"{t.name} has an object outputSchema")

    r = await call_ok(
        client, "create_entities", {"entities": [*ENTITIES, entity("Alice", "robot")]}
    )
    eq(r, {"entities": ENTITIES}, "create_entities returns what it created")
    r = await call_ok(client, "create_entities", {"entities": [ALICE]})
    eq(r, {"entities": []}, "create_entities of an existing name creates nothing")

    r = await call_ok(client, "create_relations", {"relations": [R1, R2, R3, R4, R1]})
    eq(r, {"relations": [R1, R2, R3, R4]}, "create_relations returns the new relations once")

    r = await call_ok(
        client,
        "add_observations",
        {
            "observations": [
                {"entityName": "Bob", "contents": ["Learning Esperanto", "Plays chess on weekends"]},
                {"entityName": "Émile", "contents": ["Speaks French"]},
            ]
        },
    )
    eq(
        r,
        {
            "results": [
                {"entityName": "Bob", "addedObservations": ["Learning Esperanto"]},
                {"entityName": "Émile", "addedObservations": ["Speaks French"]},
            ]
        },
        "add_observations returns only the new observations",
    )
    why = await call_error(
        client,
        "add_observations",
        {
            "observations": [
                {"entityName": "Alice", "contents": ["Must not be stored"]},
                {"entityName": "Nobody", "contents": ["x"]},
            ]
        },
    )
    check("Entity with name Nobody not found" in why, f"add_observations error text: {why}")

    after_adds = {"entities": [ALICE, BOB2, ACME, CLUB, EMILE2], "relations": [R1, R2, R3, R4]}
    eq(await call_ok(client, "read_graph", {}), after_adds, "read_graph after the additions")

    searches = [
        ("chess", {"entities": [BOB2, CLUB], "relations": [R2, R3]}),
        ("ORGANIZATION", {"entities": [ACME, CLUB], "relations": [R1, R2]}),
        ("ac", {"entities": [ALICE, ACME], "relations": [R1, R3, R4]}),
        ("zürich", {"entities": [EMILE2], "relations": [R4]}),
        ("ÉMILE", {"entities": [EMILE2], "relations": [R4]}),
        ("esperanto", {"entities": [ALICE, BOB2], "relations": [R1, R2, R3, R4]}),
        ("no such thing", {"entities": [], "relations": []}),
    ]
    for query, want in searches:
        eq(await call_ok(client, "search_nodes", {"query": query}), want, f"search_nodes {query!r}")

    eq(
        await call_ok(client, "open_nodes", {"names": ["Acme Corp", "Nobody", "Bob"]}),
        {"entities": [BOB2, ACME], "relations": [R1, R2, R3]},
        "open_nodes Acme Corp, Nobody, Bob",
    )

    step = "resources/read knowledge-graph"
    eq(await read_text(client, GRAPH_URI), after_adds, "knowledge-graph resource is the graph")

    step = "resources/templates/list"
    templates = await client.list_resource_templates()
    check(
        any(t.uri_template == "memory://entities/{name}" for t in templates.resource_templates),
        f"no memory://entities/{{name}} template in {templates.model_dump_json()}",
    )

    step = "resources/read an entity"
    eq(
        await read_text(client, entity_uri("Acme Corp")),
        {"entities": [ACME], "relations": [R1]},
        "entity resource Acme Corp",
    )
    step = "resources/read a missing entity"
    # Resource not found is -32002 up to 2025-11-25, -32602 from 2026-07-28
    # (spec: server/resources, "Error Handling").
    not_found = -32602 if client.protocol_version == "2026-07-28" else -32002
    await expect_mcp_error(
        not_found, "reading memory://entities/Nobody", client.read_resource(entity_uri("Nobody"))
    )

    step = "resources/list"
    expected_uris = [GRAPH_URI, *(entity_uri(e["name"]) for e in ENTITIES)]
    resources, _ = await all_resources(client)
    eq([str(x.uri) for x in resources], expected_uris, "resources/list of the small graph")
    acme_res = next(x for x in resources if str(x.uri) == entity_uri("Acme Corp"))
    eq([acme_res.name, acme_res.mime_type], ["Acme Corp", "application/json"], "entity resource name and mimeType")

    bulk = [entity(f"Bulk {i:03}", "bulk", f"number {i}") for i in range(150)]
    eq(len((await call_ok(client, "create_entities", {"entities": bulk}))["entities"]), 150, "bulk create")
    step = "resources/list with pages"
    resources, pages = await all_resources(client)
    check(pages >= 2, f"156 resources came in {pages} page(s)")
    eq(
        [str(x.uri) for x in resources],
        [*expected_uris, *(entity_uri(e["name"]) for e in bulk)],
        "resources/list over pages: every resource once, in order",
    )
    await call_ok(client, "delete_entities", {"entityNames": [e["name"] for e in bulk]})
    step = "resources/list after deleting the bulk"
    resources, _ = await all_resources(client)
    eq([str(x.uri) for x in resources], expected_uris, "resources/list after the bulk delete")

    eq(
        await call_ok(
            client,
            "delete_observations",
            {
                "deletions": [
                    {"entityName": "Alice", "observations": ["Speaks Esperanto"]},
                    {"entityName": "Bob", "observations": ["Learning Esperanto"]},
                ]
            },
        ),
        {"success": True, "message": "Observations deleted successfully"},
        "delete_observations",
    )
    eq(
        await call_ok(client, "delete_relations", {"relations": [R3]}),
        {"success": True, "message": "Relations deleted successfully"},
        "delete_relations",
    )
    eq(
        await call_ok(client, "delete_entities", {"entityNames": ["Chess Club"]}),
        {"success": True, "message": "Entities deleted successfully"},
        "delete_entities",
    )
    eq(await call_ok(client, "read_graph", {}), FINAL, "read_graph after the deletions")
    eq(
        await call_ok(client, "search_nodes", {"query": "esperanto"}),
        {"entities": [], "relations": []},
        "search after deletions",
    )
    step = "resources/read knowledge-graph after deletions"
    eq(await read_text(client, GRAPH_URI), FINAL, "knowledge-graph after deletions")

    await call_error(client, "create_entities", {"entities": [{"name": "Incomplete"}]})
    await call_error(client, "search_nodes", {"query": 42})
    await call_error(client, "open_nodes", {})
    step = "tools/call of an unknown tool"
    await expect_mcp_error(-32602, "calling no_such_tool", client.call_tool("no_such_tool", {}))
    eq(await call_ok(client, "read_graph", {}), FINAL, "the invalid calls changed nothing")


class Notifications:
    """What the server pushed to this client (legacy sessions: message_handler)."""

    def __init__(self) -> None:
        self.updated: list[str] = []
        self.list_changed = 0

    async def __call__(self, message: Any) -> None:
        if isinstance(message, mcp_types.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
        elif isinstance(message, mcp_types.ResourceListChangedNotification):
            self.list_changed += 1


async def wait_until(cond: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def wait_for(cond: Any, what: str, seconds: float = 5.0) -> None:
    check(await wait_until(cond, seconds), f"{what}: nothing within {seconds} s")


PROBE = entity("Notify Probe", "probe")


async def change_notifications(client: Client, mode: str, seen: Notifications) -> None:
    """A write to the graph reaches a subscriber: resources/subscribe and
    notifications on a 2025-11-25 session, subscriptions/listen at 2026-07-28.
    Leaves the graph as it found it."""
    global step
    if mode == "legacy":
        step = "resources/subscribe"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(GRAPH_URI)
        await call_ok(client, "create_entities", {"entities": [PROBE]})
        step = "notifications after create_entities"
        await wait_for(lambda: GRAPH_URI in seen.updated, "notifications/resources/updated for the subscribed graph")
        await wait_for(lambda: seen.list_changed > 0, "notifications/resources/list_changed after a new entity")
        step = "resources/unsubscribe"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.unsubscribe_resource(GRAPH_URI)
        seen.updated.clear()
        await call_ok(client, "add_observations", {"observations": [{"entityName": PROBE["name"], "contents": ["seen"]}]})
        await asyncio.sleep(0.3)
        check(GRAPH_URI not in seen.updated, "notifications/resources/updated for the graph after resources/unsubscribe")
    else:
        step = "subscriptions/listen"
        async with client.listen(resources_list_changed=True, resource_subscriptions=[GRAPH_URI]) as sub:
            eq(sub.honored.resource_subscriptions, [GRAPH_URI], "listen: honored resourceSubscriptions")
            eq(sub.honored.resources_list_changed, True, "listen: honored resourcesListChanged")
            await call_ok(client, "create_entities", {"entities": [PROBE]})
            step = "subscriptions/listen events after create_entities"
            events: set[Any] = set()
            want = {ResourceUpdated(GRAPH_URI), ResourcesListChanged()}
            try:
                with anyio.fail_after(5):
                    async for event in sub:
                        events.add(event)
                        if want <= events:
                            break
            except TimeoutError:
                raise Mismatch(f"subscriptions/listen: want {want} within 5 s, got {events}") from None
    await call_ok(client, "delete_entities", {"entityNames": [PROBE["name"]]})


def check_negotiation(client: Client, mode: str) -> None:
    global step
    step = "connect"
    eq(client.protocol_version, EXPECTED_VERSION[mode], f"protocol version negotiated in mode={mode}")
    session = client.session
    if mode == "legacy":
        check(session.initialize_result is not None, "legacy: no InitializeResult")
        check(session.discover_result is None, "legacy: a DiscoverResult is set")
        eq(session.initialize_result.server_info.name, "erlmcp", "serverInfo.name")
    else:
        d = session.discover_result
        check(d is not None, "auto: no DiscoverResult (the client fell back to initialize)")
        check(session.initialize_result is None, "auto: an InitializeResult is set")
        check("2026-07-28" in d.supported_versions, f"discover: supportedVersions {d.supported_versions}")


# ---------------------------------------------------------------- processes


def stdio_params(data_dir: str) -> StdioServerParameters:
    # The SDK passes the child only a few variables (PATH, HOME, ...): its
    # log (stderr, into this script's output) goes without colour codes.
    env = {"NO_COLOR": "1", "RUST_LOG": os.environ.get("RUST_LOG", "info")}
    return StdioServerParameters(command=os.environ["PEER_BIN"], args=["stdio", "--data-dir", data_dir], env=env)


class Server:
    """`erlmcp serve` as a child process on a fixed port and data dir."""

    def __init__(self, port: int, data_dir: str, log_dir: str) -> None:
        self.port, self.data_dir, self.log_dir = port, data_dir, log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(os.path.join(self.log_dir, "serve.log"), "ab") as log:
            self.proc = subprocess.Popen(
                [os.environ["PEER_BIN"], "serve", "--listen", f"127.0.0.1:{self.port}", "--ops-listen", "127.0.0.1:0", "--data-dir", self.data_dir],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        while True:
            check(self.proc.poll() is None, f"erlmcp serve exited with {self.proc.returncode}; see serve.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                check(time.monotonic() < deadline, f"erlmcp serve did not listen on {self.port} within 15 s")
                time.sleep(0.05)

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Mismatch(f"erlmcp serve did not exit within 10 s of signal {sig}") from None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- scenarios


async def over_stdio(mode: str, data_dir: str) -> None:
    global step
    step = f"connect over stdio (mode={mode})"
    seen = Notifications()
    async with Client(stdio_params(data_dir), mode=mode, message_handler=seen) as client:
        check_negotiation(client, mode)
        await memory_flow(client)
        await change_notifications(client, mode, seen)
    step = "stdio: a second process on the same data dir"
    async with Client(stdio_params(data_dir), mode=mode) as client:
        eq(await call_ok(client, "read_graph", {}), FINAL, "read_graph from a new stdio process")


async def over_http(mode: str, data_dir: str) -> None:
    global step
    server = Server(int(os.environ["PEER_PORT"]), data_dir, os.environ.get("PEER_LOG_DIR", data_dir))
    step = "start erlmcp serve"
    server.start()
    try:
        step = f"connect over HTTP (mode={mode})"
        seen = Notifications()
        async with Client(f"http://127.0.0.1:{server.port}/mcp", mode=mode, message_handler=seen) as client:
            check_negotiation(client, mode)
            await memory_flow(client)
            await change_notifications(client, mode, seen)
            if mode == "legacy":
                # A subscription made before the crash (kept with the session).
                step = "resources/subscribe before the restart"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await client.subscribe_resource(GRAPH_URI)
                seen.updated.clear()
            await call_ok(client, "create_entities", {"entities": [MARKER]})
            if mode == "legacy":
                await wait_for(lambda: GRAPH_URI in seen.updated, "resources/updated before the restart")

            # SIGKILL, then a new process on the same port and data dir: the
            # client carries on (legacy: on the same Mcp-Session-Id, which
            # erlmcp restores from its database; it would get 404 otherwise).
            step = "SIGKILL and restart of erlmcp serve"
            eq(server.stop(signal.SIGKILL), -signal.SIGKILL, "the server died of SIGKILL")
            server.start()
            step = "the same client after the restart"
            eq(await call_ok(client, "read_graph", {}), WITH_MARKER, "read_graph after the restart")
            eq(
                await call_ok(client, "open_nodes", {"names": ["Restart Marker"]}),
                {"entities": [MARKER], "relations": []},
                "open_nodes after the restart",
            )
            if mode == "legacy":
                # A write right after the restart, before the client's GET
                # stream has come back: its notification must reach the
                # subscriber when the stream resumes from its Last-Event-ID
                # (as it does when the stream drops without a restart).
                seen.updated.clear()
                await call_ok(client, "create_entities", {"entities": [PROBE]})
                step = "the subscription across the restart"
                must_hold(
                    await wait_until(lambda: GRAPH_URI in seen.updated, 8),
                    "notifications/resources/updated for a write made after the restart, before the client "
                    "resumed its GET stream with Last-Event-ID, never arrived (not replayed on resume)",
                )
                # Once the GET stream is back, the restored subscription delivers.
                seen.updated.clear()
                await call_ok(client, "delete_entities", {"entityNames": [PROBE["name"]]})
                step = "the subscription after the restart"
                await wait_for(lambda: GRAPH_URI in seen.updated, "resources/updated on the restored session", 8)
            else:
                await call_ok(client, "create_entities", {"entities": [PROBE]})
                await call_ok(client, "delete_entities", {"entityNames": [PROBE["name"]]})
        step = "SIGTERM of erlmcp serve"
        eq(server.stop(signal.SIGTERM), 0, "erlmcp serve exit status on SIGTERM")
    finally:
        server.kill()

    step = "stdio on the data dir the HTTP server used"
    async with Client(stdio_params(data_dir), mode=mode) as client:
        eq(await call_ok(client, "read_graph", {}), WITH_MARKER, "read_graph over stdio after the HTTP server stopped")


async def main(transport: str, mode: str) -> None:
    data_dir = os.environ["PEER_DATA_DIR"]
    if transport == "stdio":
        await over_stdio(mode, data_dir)
    else:
        await over_http(mode, data_dir)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("stdio", "http") or sys.argv[2] not in ("legacy", "auto"):
        sys.exit("usage: test_memory.py stdio|http legacy|auto")
    transport, mode = sys.argv[1], sys.argv[2]
    try:
        asyncio.run(main(transport, mode))
        if bugs:
            print(f"python {transport} {mode}: FAILED:", *bugs, sep="\n", file=sys.stderr)
            sys.exit(1)
    except SystemExit:
        raise
    except BaseException as e:
        # anyio task groups inside the client may wrap the failure in groups.
        inner: BaseException = e
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        print(f"python {transport} {mode}: FAILED at {step}:", file=sys.stderr)
        if isinstance(inner, Mismatch):
            print(inner, file=sys.stderr)
        else:
            traceback.print_exception(inner)
        sys.exit(1)
