# erlmcp under real systemd: startup, MCP over the LAN, the journal,
# reload, crash restart, watchdog, socket activation. Every write the
# server acknowledged must still be there at the end.
# McpSession comes from mcp_client.py, prepended by both drivers ("prelude"
# in basic.machines.json), and so does its `import json`: importing it here
# again is a pyflakes error in the NixOS driver's lint.

URL = "http://server:8080/mcp"
acknowledged: list[str] = []


def main_pid():
    return int(server.succeed("systemctl show -P MainPID erlmcp.service").strip())


def switch_to(configuration):
    """Switch the server to one of its configurations, the NixOS way: a
    specialisation declared for it (basic.machines.json, "specialisations";
    vm-tests/common.nix turns each into a NixOS specialisation), or "booted"
    for the one it booted. The module's files under /etc are read-only on
    NixOS and in the harness: a story never edits them."""
    system = "/run/booted-system"
    if configuration != "booted":
        system += f"/specialisation/{configuration}"
    server.succeed(f"{system}/bin/switch-to-configuration test")


def write(session, name):
    session.call("create_entities", {"entities": [
        {"name": name, "entityType": "probe", "observations": [f"written as {name}"]}]})
    acknowledged.append(name)


start_all()

with subtest("the service is active only once it reported READY"):
    server.wait_for_unit("erlmcp.service")
    t.assertEqual(server.succeed("systemctl show -P Type erlmcp.service").strip(), "notify-reload")
    # Active under Type=notify-reload means READY=1 arrived, which erlmcp
    # sends only with the database open and both listeners bound.
    server.succeed("curl -sf http://127.0.0.1:9718/readyz")
    status = server.succeed("systemctl show -P StatusText erlmcp.service")
    assert "sessions" in status, status
    assert "ready" in server.succeed("erlmcp status --ops 127.0.0.1:9718")

with subtest("a client on another machine speaks MCP to it"):
    client.wait_for_unit("multi-user.target")
    s = McpSession(client, URL)
    sid = s.initialize()
    write(s, "first")
    t.assertEqual(s.entity_names(), ["first"])

with subtest("the journal carries structured fields"):
    # (Read whole outputs: `grep -q` would end the pipe early, and the
    # drivers run commands with pipefail.)
    entries = [json.loads(line) for line in server.succeed(
        f"journalctl -u erlmcp.service SESSION={sid} -o json").splitlines()]
    assert any(e.get("MESSAGE") == "session initialized" for e in entries), entries
    t.assertEqual({e["SYSLOG_IDENTIFIER"] for e in entries}, {"erlmcp"})

with subtest("the config file is the module's, read-only"):
    server.fail("echo '# edited' >> /etc/erlmcp/erlmcp.toml")
    server.succeed("test -L /etc/erlmcp/erlmcp.toml")

with subtest("a configuration switch reloads erlmcp and keeps the session"):
    assert s.request("prompts/list")["prompts"] == []
    pid = main_pid()
    # Only settings change ("greet" adds a prompt): the module's
    # reloadTriggers make this a reload, not a restart.
    switch_to("greet")
    t.assertEqual(main_pid(), pid, "a reload is not a restart")
    names = [p["name"] for p in s.request("prompts/list")["prompts"]]
    t.assertEqual(names, ["greet"])
    write(s, "after-reload")

with subtest("an invalid config is rejected by reload and the old one stays"):
    # "invalid" has an unknown key (and validateConfig off, so that NixOS
    # builds it at all).
    switch_to("invalid")
    assert "REJECTED" in server.succeed("erlmcp status --ops 127.0.0.1:9718")
    t.assertEqual(main_pid(), pid, "a rejected reload is not a restart")
    t.assertEqual([p["name"] for p in s.request("prompts/list")["prompts"]], ["greet"])
    switch_to("greet")
    assert "REJECTED" not in server.succeed("erlmcp status --ops 127.0.0.1:9718")

with subtest("SIGKILL: systemd restarts it and the session survives"):
    pid = main_pid()
    server.succeed("systemctl kill -s KILL erlmcp.service")
    server.wait_until_succeeds(f"test $(systemctl show -P MainPID erlmcp.service) -ne {pid} "
                               "&& systemctl is-active erlmcp.service", timeout=60)
    t.assertEqual(s.entity_names(), sorted(acknowledged))
    write(s, "after-kill")

with subtest("a hung process is killed by the watchdog and restarted"):
    # The unit itself must arm the watchdog: the test only shortens it (a
    # drop-in here, mkForce on NixOS), so a unit without one must fail here.
    server.succeed("grep -q '^WatchdogSec=' \"$(systemctl show -P FragmentPath erlmcp.service)\"")
    t.assertNotEqual(server.succeed("systemctl show -P WatchdogUSec erlmcp.service").strip(), "0")
    pid = main_pid()
    # The ops listener is bound beyond loopback here: a POST needs a token
    # with scope ops, and the daemon's local credential is one.
    server.succeed("curl -sf -X POST -H \"Authorization: Bearer $(cat /var/lib/erlmcp/ops.token)\" "
                   "http://127.0.0.1:9718/fault/hang-writer")
    server.wait_until_succeeds(f"test $(systemctl show -P MainPID erlmcp.service) -ne {pid} "
                               "&& systemctl is-active erlmcp.service", timeout=120)
    assert "watchdog timeout" in server.succeed("journalctl -u erlmcp.service").lower()
    t.assertEqual(s.entity_names(), sorted(acknowledged))

with subtest("socket activation: a restart refuses no connection"):
    client.succeed(
        "( for i in $(seq 60); do "
        "curl -s -o /dev/null -w '%{http_code}\\n' --max-time 30 -X POST "
        "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' "
        "--data-binary '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
        "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"p\",\"version\":\"1\"}}}' "
        f"{URL} >> /tmp/codes; sleep 0.05; done; touch /tmp/probe-done ) >/dev/null 2>&1 &")
    client.wait_until_succeeds("test $(wc -l < /tmp/codes) -ge 5", timeout=60)
    server.succeed("systemctl restart erlmcp.service")
    client.wait_until_succeeds("test -e /tmp/probe-done", timeout=300)
    codes = client.succeed("sort /tmp/codes | uniq -c")
    t.assertEqual(client.succeed("grep -cv '^200$' /tmp/codes || true").strip(), "0", codes)

with subtest("no acknowledged write was lost"):
    t.assertEqual(s.entity_names(), sorted(acknowledged))
