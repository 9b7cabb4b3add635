# Prometheus next to erlmcp, with erlmcp's own rules
# (dist/prometheus/erlmcp.rules.yml, unchanged: the story waits out their
# `for:`), scraping its ops listener every 2 s and evaluating every 2 s.
# Through Prometheus' HTTP API: ErlmcpDown goes pending, then firing,
# while erlmcp is stopped, and back to inactive once it runs again;
# ErlmcpBackupFailing fires when the backup directory becomes unwritable
# and goes back to inactive after a good backup. Each alert carries its
# severity and a runbook_url that names its runbook. The NixOS test
# (vm-tests/prometheus.nix) is services.prometheus with
# services.erlmcp.prometheus.scrape.

import json

API = "http://127.0.0.1:9090/api/v1"
RUNBOOKS = "https://erlmcp.example/docs/runbooks/"


def rule(name):
    """The alerting rule `name` as /api/v1/rules shows it (state, alerts)."""
    groups = json.loads(server.succeed(f"curl -sf {API}/rules?type=alert"))["data"]["groups"]
    found = [r for g in groups for r in g["rules"] if r["name"] == name]
    t.assertEqual(len(found), 1, f"one rule {name} in {[g['name'] for g in groups]}")
    return found[0]


def alerts(name, state):
    """The alerts named `name` in `state` that /api/v1/alerts lists."""
    listed = json.loads(server.succeed(f"curl -sf {API}/alerts"))["data"]["alerts"]
    return [a for a in listed if a["labels"]["alertname"] == name and a["state"] == state]


def wait_for_state(name, state, timeout):
    """Waits until the rule `name` is `state` (inactive, pending, firing)."""
    def reached(_last_try):
        return rule(name)["state"] == state
    retry(reached, timeout)


def check_labels(name, severity):
    firing = alerts(name, "firing")
    t.assertEqual(len(firing), 1, f"{name} firing once: {firing}")
    a = firing[0]
    t.assertEqual(a["labels"]["severity"], severity)
    t.assertEqual(a["labels"]["job"], "erlmcp")
    t.assertEqual(a["annotations"]["runbook_url"], f"{RUNBOOKS}{name}.md")
    t.assertTrue(a["annotations"]["summary"], "a summary")
    log.info(f"{name} firing: {json.dumps(a)}")


def query(expr):
    """The value of an instant query with one result, or None."""
    out = json.loads(server.succeed(
        f"curl -sf --get {API}/query --data-urlencode 'query={expr}'"))["data"]["result"]
    return float(out[0]["value"][1]) if out else None


start_all()

with subtest("Prometheus scrapes erlmcp and has loaded its rules"):
    server.wait_for_unit("erlmcp.service")
    server.wait_for_unit("prometheus.service")
    server.wait_for_open_port(9090)
    server.wait_until_succeeds(f"curl -sf --get {API}/query --data-urlencode 'query=up{{job=\"erlmcp\"}} == 1' "
                               "| jq -e '.data.result | length == 1'", timeout=60)
    for name in ("ErlmcpDown", "ErlmcpNotReady", "ErlmcpBackupStale", "ErlmcpBackupFailing"):
        t.assertEqual(rule(name)["state"], "inactive", name)

with subtest("ErlmcpDown fires while erlmcp is stopped"):
    # The sockets too: a scrape on the ops socket would start erlmcp again.
    server.succeed("systemctl stop erlmcp.socket erlmcp-ops.socket erlmcp.service")
    wait_for_state("ErlmcpDown", "pending", 30)
    # `for: 1m` in the rules.
    wait_for_state("ErlmcpDown", "firing", 120)
    check_labels("ErlmcpDown", "critical")

with subtest("ErlmcpDown goes back to inactive once erlmcp runs again"):
    # Socket activation: Prometheus' next scrape starts erlmcp.
    server.succeed("systemctl start erlmcp.socket erlmcp-ops.socket")
    wait_for_state("ErlmcpDown", "inactive", 60)
    server.succeed("systemctl is-active erlmcp.service")
    t.assertEqual(alerts("ErlmcpDown", "firing"), [])

with subtest("ErlmcpBackupFailing fires when backups cannot be written"):
    server.wait_until_succeeds(
        f"curl -sf --get {API}/query --data-urlencode "
        "'query=erlmcp_backup_last_success_timestamp_seconds > 0' | jq -e '.data.result | length == 1'",
        timeout=60)
    t.assertEqual(rule("ErlmcpBackupFailing")["state"], "inactive")
    # The service's own user owns the directory; without its write bit the
    # next scheduled backup (every 10 s) fails.
    server.succeed("chmod 0500 /var/lib/erlmcp/backups")
    wait_for_state("ErlmcpBackupFailing", "firing", 60)
    check_labels("ErlmcpBackupFailing", "warning")
    failed_at = query("erlmcp_backup_last_failure_timestamp_seconds")
    t.assertTrue(failed_at is not None and failed_at > 0, failed_at)

with subtest("a good backup ends ErlmcpBackupFailing"):
    server.succeed("chmod 0700 /var/lib/erlmcp/backups")
    server.succeed("erlmcp backup create --config /etc/erlmcp/erlmcp.toml")
    wait_for_state("ErlmcpBackupFailing", "inactive", 60)
