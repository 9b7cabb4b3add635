# Backups and restore under real systemd: a scheduled backup holds what was
# acknowledged before it; after the database is lost, `erlmcp restore
# latest` brings back exactly that, skipping a corrupted newer backup and
# saying why; the restored service is healthy and serves the data.
# McpSession comes from mcp_client.py, prepended by both drivers ("prelude"
# in restore.machines.json), and so does its `import json`: importing it here
# again is a pyflakes error in the NixOS driver's lint.

URL = "http://server:8080/mcp"
CONFIG = "/etc/erlmcp/erlmcp.toml"


def backups():
    """Good backups, newest first, as listed by the CLI (through the daemon)."""
    listed = json.loads(server.succeed(f"erlmcp backup list --json --config {CONFIG}"))
    return [b for b in listed if b.get("status") == "good"]


def wait_for_backup_after(when):
    """Waits for a good backup taken after `when` (server clock, seconds)."""
    server.wait_until_succeeds(
        f"erlmcp backup list --json --config {CONFIG} | "
        f"jq -e '[.[] | select(.status == \"good\" and .manifest.created_at > {when})] | length > 0'",
        timeout=180)
    return backups()[0]["id"]


def server_now():
    return int(server.succeed("date +%s").strip())


start_all()

with subtest("the service runs with scheduled backups"):
    server.wait_for_unit("erlmcp.service")
    server.succeed("curl -sf http://127.0.0.1:9718/readyz")
    client.wait_for_unit("multi-user.target")

with subtest("entities written through MCP are in the next scheduled backup"):
    s = McpSession(client, URL)
    s.initialize()
    kept = [f"kept-{i}" for i in range(5)]
    s.call("create_entities", {"entities": [
        {"name": n, "entityType": "fact", "observations": [f"{n} was acknowledged"]} for n in kept]})
    written = server_now()
    holding = wait_for_backup_after(written)
    server.log(f"scheduled backup {holding} holds {kept}")

with subtest("the schedule stops; a later write goes into an on-demand backup, which gets corrupted"):
    # No more scheduled backups from here on: one taken after the database
    # is lost would hold the empty database.
    server.succeed("mkdir -p /run/systemd/system/erlmcp.service.d && "
                   "printf '[Service]\nEnvironment=ERLMCP_BACKUP__ENABLED=false\n' "
                   "> /run/systemd/system/erlmcp.service.d/no-schedule.conf && "
                   "systemctl daemon-reload && systemctl restart erlmcp.service")
    server.wait_for_unit("erlmcp.service")
    s.call("create_entities", {"entities": [
        {"name": "after-backup", "entityType": "fact", "observations": ["not in the good backup"]}]})
    server.succeed(f"erlmcp backup create --config {CONFIG}")
    newest = backups()[0]["id"]
    assert newest != holding, (newest, holding)
    # Flip one byte in the middle of the newest backup's compressed file.
    path = f"/var/lib/erlmcp/backups/{newest}.db.zst"
    server.succeed(f"size=$(stat -c %s {path}); "
                   f"printf '\\377' | dd of={path} bs=1 seek=$((size / 2)) conv=notrunc status=none")

with subtest("the database is lost"):
    server.succeed("systemctl stop erlmcp.service")
    server.succeed("rm -f /var/lib/erlmcp/erlmcp.db /var/lib/erlmcp/erlmcp.db-wal /var/lib/erlmcp/erlmcp.db-shm")
    server.succeed("systemctl start erlmcp.service")
    server.wait_for_unit("erlmcp.service")
    fresh = McpSession(client, URL)
    fresh.initialize()
    t.assertEqual(fresh.entity_names(), [], "the service came back empty")

with subtest("restore latest skips the corrupted backup and says why"):
    out = server.succeed(f"erlmcp restore latest --config {CONFIG} 2>&1")
    server.log(out)
    assert newest in out and "skip" in out.lower(), out
    journal = server.succeed("journalctl -u erlmcp.service")
    assert "skipped" in journal and newest in journal, "the daemon logs the skip"

with subtest("the restored service is healthy and serves exactly what the backup held"):
    server.succeed("curl -sf http://127.0.0.1:9718/readyz")
    again = McpSession(client, URL)
    again.initialize()
    t.assertEqual(again.entity_names(), sorted(kept))
    # The session from before the backup is in it, so it carries on.
    t.assertEqual(s.entity_names(), sorted(kept))
