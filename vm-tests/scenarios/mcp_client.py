# A tiny MCP client for the scenario scripts: curl on a machine, JSON-RPC
# over Streamable HTTP (2025-11-25 sessions). Both drivers put this file in
# front of each story that lists it under "prelude" in its machines.json
# (vm-tests/test-script.nix), so the stories stay plain NixOS test scripts;
# its imports (json, shlex) are theirs too.
import json
import shlex


class McpSession:
    def __init__(self, machine, url):
        self.machine = machine
        self.url = url
        self.id = None
        self.next_id = 0

    def _post(self, body, extra_headers=""):
        headers = ("-H 'Content-Type: application/json' "
                   "-H 'Accept: application/json, text/event-stream' "
                   "-H 'MCP-Protocol-Version: 2025-11-25' " + extra_headers)
        if self.id:
            headers += f"-H 'Mcp-Session-Id: {self.id}' "
        out = self.machine.succeed(
            f"curl -sS --max-time 60 -D /tmp/mcp-headers -X POST {headers} "
            f"--data-binary {shlex.quote(json.dumps(body))} {self.url}")
        head = self.machine.succeed("cat /tmp/mcp-headers")
        return head, out

    @staticmethod
    def messages(body):
        """The JSON-RPC messages of a JSON or SSE body."""
        body = body.strip()
        if body.startswith("{"):
            return [json.loads(body)]
        msgs = []
        for block in body.split("\n\n"):
            data = "".join(line[5:].strip() for line in block.splitlines()
                           if line.startswith("data:"))
            if data:
                msgs.append(json.loads(data))
        return msgs

    def initialize(self):
        head, out = self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "vm-test", "version": "1"}}})
        for line in head.splitlines():
            if line.lower().startswith("mcp-session-id:"):
                self.id = line.split(":", 1)[1].strip()
        assert self.id, f"no Mcp-Session-Id in {head}"
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self.id

    def request(self, method, params=None):
        self.next_id += 1
        _, out = self._post({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                             "params": params or {}})
        for m in self.messages(out):
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise AssertionError(f"{method} failed: {m['error']}")
                return m["result"]
        raise AssertionError(f"no response to {method} in {out!r}")

    def call(self, tool, arguments):
        result = self.request("tools/call", {"name": tool, "arguments": arguments})
        assert not result.get("isError"), f"{tool} failed: {result}"
        return result.get("structuredContent", result)

    def entity_names(self):
        graph = self.call("read_graph", {})
        return sorted(e["name"] for e in graph["entities"])
