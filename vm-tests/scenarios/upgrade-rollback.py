# Upgrades that roll back by themselves, data included, under real systemd.
# The server has two releases: the current one and the test build of the
# next (one more migration: memory_entities.updated_at and a memory_tags
# table; `TEST_ERLMCP_FAULT=unready@<next>` keeps it from ever being ready).
#   1. The current release serves a client with data and a session.
#   2. A good upgrade is confirmed after its probation; the session goes on,
#      the data is all there, its restore point exists.
#   3. A bad upgrade (never ready) migrates and acknowledges writes, fails
#      its health gate and is rolled back by itself: every acknowledged
#      write is served by the previous release, which says why it runs again.
#   4. The machine crashes in the middle of a migration and in the middle of
#      a rollback: after the boot the upgrade completes or rolls back, and
#      the data is whole.
# Two ways to upgrade, one story:
# * Debian (the local harness, "releases" in the machines.json): releases
#   side by side in /opt/erlmcp/releases, `erlmcp upgrade apply` flips the
#   /opt/erlmcp/current link and rolls back; erlmcp-upgrade-resume.service
#   finishes an upgrade a crash interrupted.
# * NixOS (vm-tests/upgrade-rollback.nix): the next release is the
#   specialisation "next"; switching to it starts the module's upgrade
#   guard, which switches the system back when the release is not confirmed
#   in time, and picks up at boot what a crash interrupted.
# Faults and pause points are runtime drop-ins under /run (gone at the next
# boot on both), since /etc is read-only on both.
# McpSession comes from mcp_client.py, prepended by both drivers ("prelude"
# in the machines.json), and so does its `import json`.
import time

URL = "http://server:8080/mcp"
CONFIG = "/etc/erlmcp/erlmcp.toml"
OPS = "http://127.0.0.1:9718"
DB = "/var/lib/erlmcp/erlmcp.db"
# upgrade.probation_secs and upgrade.deadline_secs (the machines.json).
PROBATION = 5
DEADLINE = 20
GUARD = "/var/lib/erlmcp-upgrade-guard"
OUT = "/var/tmp/story-upgrade"
POLL_LOG = "/var/tmp/story-poll.log"
DROPINS = "/run/systemd/system/erlmcp.service.d"
# A pause long enough to crash the machine in it.
PAUSE_MS = 600000

acknowledged: list[str] = []
figures: list[str] = []


def figure(line):
    figures.append(line)
    log.info("FIGURE " + line)


def server_now():
    return float(server.succeed("date +%s.%N").strip())


def status():
    return json.loads(server.succeed(f"curl -sf --max-time 5 {OPS}/status"))


def upgrade_state():
    return status()["upgrade"]


def schema():
    """The database's schema version (read-only: never creates a WAL file
    the service could not open)."""
    return int(server.succeed(f"sqlite3 -readonly {DB} 'PRAGMA user_version'").strip())


def columns(table):
    out = server.succeed(f"sqlite3 -readonly {DB} \"SELECT name FROM pragma_table_info('{table}')\"")
    return out.split()


def version_of(binary):
    return server.succeed(f"{binary} --version").split()[1]


def write(session, name):
    session.call("create_entities", {"entities": [
        {"name": name, "entityType": "probe", "observations": [f"written as {name}"]}]})
    acknowledged.append(name)


def lost():
    """Acknowledged writes the server does not serve."""
    fresh = McpSession(client, URL)
    fresh.initialize()
    return sorted(set(acknowledged) - set(fresh.entity_names()))


def service_env(name, assignment):
    """A runtime drop-in for erlmcp.service (under /run: gone at the next
    boot), or none when `assignment` is None. Takes effect at its next start."""
    path = f"{DROPINS}/story-{name}.conf"
    if assignment is None:
        server.succeed(f"rm -f {path} && systemctl daemon-reload")
    else:
        server.succeed(f"mkdir -p {DROPINS} && "
                       f"printf '[Service]\\nEnvironment={assignment}\\n' > {path} && "
                       "systemctl daemon-reload")


def begin(to, pause=None):
    """Starts the move to release `to` in the background, as an operator's
    shell would run it (in a unit of its own, so the story can write and
    crash meanwhile). Debian: `erlmcp upgrade apply`, or `erlmcp upgrade
    rollback` back to the release before; NixOS: switch-to-configuration
    into the specialisation "next", or back to the booted configuration.
    `pause`: TEST_ERLMCP_PAUSE_AT for the command (Debian)."""
    if DEBIAN:
        what = f"apply {to}" if to == NEXT else "rollback"
        cmd = f"erlmcp upgrade {what} --config {CONFIG} --json"
    else:
        system = "/run/booted-system" + ("/specialisation/next" if to == NEXT else "")
        cmd = f"{system}/bin/switch-to-configuration test"
    env = f"-E TEST_ERLMCP_PAUSE_AT={pause} " if pause else ""
    server.succeed(f"rm -f {OUT}.json {OUT}.rc && "
                   f"systemd-run --unit=story-upgrade --collect --service-type=exec "
                   f"-E PATH=\"$PATH\" {env}"
                   f"sh -c '{cmd} >{OUT}.json; echo $? >{OUT}.rc'")


def outcome(since, timeout=DEADLINE + 120):
    """How the move begun after `since` ended: `erlmcp upgrade apply
    --json`'s outcome (Debian), or the upgrade guard's verdict (NixOS, the
    same fields)."""
    server.wait_until_succeeds(f"test -s {OUT}.rc", timeout=timeout)
    if DEBIAN:
        out = server.succeed(f"cat {OUT}.json")
        log.info(f"erlmcp upgrade: exit {server.succeed(f'cat {OUT}.rc').strip()}: {out}")
    else:
        server.succeed(f"test \"$(cat {OUT}.rc)\" = 0")
        server.wait_until_succeeds(
            f"jq -e '.started >= {int(since)} and .outcome != null' {GUARD}/last.json",
            timeout=timeout)
        out = server.succeed(f"cat {GUARD}/last.json")
        log.info(f"upgrade guard: {out}")
    return json.loads(out)


def settled():
    """No upgrade left in progress: erlmcp answers, its release is not on
    probation, and nothing is left to finish (Debian: the journal next to
    the link; NixOS: the guard's record)."""
    left = "/opt/erlmcp/current.upgrade" if DEBIAN else f"{GUARD}/pending"
    server.wait_until_succeeds(
        f"test ! -e {left} && curl -sf --max-time 5 {OPS}/status | "
        "jq -e '.upgrade.state != \"probation\"'", timeout=DEADLINE + 180)
    return upgrade_state()


def journal(since, *units):
    """[(when, text)] of the journal since `since` (server clock, seconds):
    each message with the fields erlmcp logs its upgrade notes and reasons
    in (UPGRADE=, REASON=)."""
    where = " ".join(f"-u {u}" for u in units)
    out = server.succeed(f"journalctl --since @{int(since)} {where} -o json "
                         "--output-fields=MESSAGE,UPGRADE,REASON --no-pager")
    entries = []
    for line in out.splitlines():
        e = json.loads(line)
        parts = [e.get(k) for k in ("MESSAGE", "UPGRADE", "REASON")]
        entries.append((int(e["__REALTIME_TIMESTAMP"]) / 1e6,
                        ": ".join(p for p in parts if isinstance(p, str))))
    return entries


def journal_since(since, *units):
    return "\n".join(text for _, text in journal(since, *units))


def first_entry(since, text):
    """When the first journal entry after `since` that says `text` was written."""
    for when, said in journal(since):
        if text in said:
            return when
    return None


def wait_for_pause(since, point):
    """Waits until erlmcp (or `erlmcp upgrade`) sleeps at pause point `point`."""
    server.wait_until_succeeds(
        f"journalctl --since @{int(since)} -o cat POINT={point} --no-pager | "
        "grep -q 'pausing at a test pause point'", timeout=DEADLINE + 120)


def pinned():
    return server.succeed("ls /var/lib/erlmcp/backups/ | grep '[.]pinned$' || true").split()


def start_poller():
    """Samples, every 0.2 s, which release answers /status and whether it
    is ready: when the previous release serves again, on the server's clock."""
    server.succeed(
        f"cat > /var/tmp/story-poller.sh <<'EOF'\n"
        "while :; do\n"
        f"  r=$(curl -s --max-time 1 {OPS}/status | jq -r '.upgrade.release // \"-\"' 2>/dev/null || true)\n"
        f"  c=$(curl -s --max-time 1 -o /dev/null -w '%{{http_code}}' {OPS}/readyz || true)\n"
        f"  echo \"$(date +%s.%N) ${{r:--}} ${{c:-000}}\" >> {POLL_LOG}\n"
        "  sleep 0.2\n"
        "done\n"
        "EOF\n"
        f"rm -f {POLL_LOG} && systemd-run --unit=story-poller --collect -E PATH=\"$PATH\" "
        "sh /var/tmp/story-poller.sh")


def serving_again(after, release):
    """The first poll after `after` that found `release` answering, ready."""
    for line in server.succeed(f"cat {POLL_LOG}").splitlines():
        parts = line.split()
        if len(parts) == 3 and float(parts[0]) > after and parts[1] == release and parts[2] == "200":
            return float(parts[0])
    return None


def check_data(release):
    """Every acknowledged write is served, by a release whose schema is its own."""
    t.assertEqual(lost(), [], "acknowledged writes lost")
    has_column = "updated_at" in columns("memory_entities")
    t.assertEqual(has_column, release == NEXT, f"the schema of {release}")
    t.assertEqual(schema(), base_schema + (1 if release == NEXT else 0))


def go_back():
    """Back to the current release by hand (between two upgrades)."""
    since = server_now()
    begin(CURRENT)
    outcome(since)
    u = settled()
    t.assertEqual(u["release"], CURRENT)
    check_data(CURRENT)


start_all()

# The releases layout (Debian) or specialisations (NixOS).
DEBIAN = server.execute("test -L /opt/erlmcp/current")[0] == 0
if DEBIAN:
    CURRENT = server.succeed("basename \"$(readlink /opt/erlmcp/current)\"").strip()
    NEXT = [r for r in server.succeed("ls /opt/erlmcp/releases").split() if r != CURRENT][0]
else:
    CURRENT = version_of("/run/booted-system/sw/bin/erlmcp")
    NEXT = version_of("/run/booted-system/specialisation/next/sw/bin/erlmcp")
log.info(f"releases: current {CURRENT}, next {NEXT} ({'Debian: erlmcp upgrade' if DEBIAN else 'NixOS: specialisations and the upgrade guard'})")

with subtest("the current release serves a client with data and a session"):
    server.wait_for_unit("erlmcp.service")
    client.wait_for_unit("multi-user.target")
    t.assertNotEqual(CURRENT, NEXT)
    s = McpSession(client, URL)
    sid = s.initialize()
    for i in range(5):
        write(s, f"before-{i}")
    t.assertEqual(s.entity_names(), sorted(acknowledged))
    u = upgrade_state()
    t.assertEqual((u["release"], u["state"]), (CURRENT, "confirmed"))
    base_schema = schema()
    t.assertNotIn("updated_at", columns("memory_entities"))

with subtest("a good upgrade: migrated, on probation with a restore point, confirmed; the session goes on"):
    since = server_now()
    begin(NEXT)
    server.wait_until_succeeds(
        f"curl -sf --max-time 5 {OPS}/status | jq -e '.upgrade.release == \"{NEXT}\"'", timeout=60)
    u = upgrade_state()
    log.info(f"next release: {u}")
    # The restore point is pinned while the release is on probation.
    if u["state"] == "probation":
        restore_point = u["restore_point"]
        t.assertIn(f"{restore_point}.pinned", pinned())
    else:  # confirmed already: the history names it, the backup stays
        restore_point = None
    write(s, "on-probation")
    o = outcome(since)
    t.assertEqual(o["outcome"], "confirmed", o)
    t.assertEqual(o["release"], NEXT)
    u = settled()
    t.assertEqual((u["release"], u["previous"], u["state"]), (NEXT, CURRENT, "confirmed"))
    took = first_entry(since, f"{NEXT} confirmed after")
    figure(f"good upgrade: {NEXT} confirmed {o['after_secs']} s after the switch "
           f"(probation {PROBATION} s; journal: {took - since:.1f} s)" if took else
           f"good upgrade: confirmed after {o['after_secs']} s")
    # The same session, all the data, the new schema.
    t.assertEqual(s.id, sid)
    t.assertEqual(s.entity_names(), sorted(acknowledged))
    check_data(NEXT)
    if restore_point is None:
        restore_point = json.loads(server.succeed(
            f"journalctl --since @{int(since)} -o json --no-pager | "
            "jq -s '[.[] | select(.MESSAGE == \"restore point taken before the schema changes\")]"
            " | last | .BACKUP'"))
    # Confirmed: the restore point is let go to retention, and it is there.
    good = json.loads(server.succeed(f"erlmcp backup list --json --config {CONFIG}"))
    t.assertIn(restore_point, [b["id"] for b in good if b.get("status") == "good"])
    t.assertEqual(pinned(), [], "unpinned once confirmed")
    figure(f"good upgrade: restore point {restore_point} kept, unpinned after the confirmation")

with subtest("back to the current release by hand: it takes the data back with the recorded down steps"):
    go_back()
    u = upgrade_state()
    t.assertEqual(u["state"], "rolled_back", u)
    t.assertEqual(s.entity_names(), sorted(acknowledged))

with subtest("a bad upgrade: it migrates, acknowledges writes, fails its health gate and is rolled back by itself"):
    service_env("fault", f"TEST_ERLMCP_FAULT=unready@{NEXT}")
    start_poller()
    before = len(acknowledged)
    since = server_now()
    begin(NEXT)
    server.wait_until_succeeds(
        f"curl -sf --max-time 5 {OPS}/status | jq -e '.upgrade.release == \"{NEXT}\"'", timeout=60)
    u = upgrade_state()
    t.assertEqual(u["state"], "probation", u)
    server.fail(f"curl -sf --max-time 5 {OPS}/readyz")
    t.assertEqual(schema(), base_schema + 1, "it migrated")
    # Writes through its window, until the rollback begins.
    during = 0
    while first_entry(since, "rolling back") is None:
        write(s, f"during-{during}")
        during += 1
        if server_now() > since + DEADLINE + 60:
            raise AssertionError("no rollback within the deadline")
        time.sleep(0.3)
    o = outcome(since)
    failed_at = first_entry(since, "rolling back")
    t.assertEqual(o["outcome"], "rolled_back", o)
    t.assertEqual(o["release"], CURRENT)
    assert "not ready" in o["reason"], o
    t.assertLess(failed_at - since, DEADLINE + 15, "the rollback begins at the deadline")
    u = settled()
    t.assertEqual((u["release"], u["previous"], u["state"]), (CURRENT, NEXT, "rolled_back"))
    assert NEXT in u["reason"] and "not ready" in u["reason"], u
    back = serving_again(failed_at, CURRENT)
    assert back is not None, "the poller never saw the previous release ready"
    figure(f"bad upgrade: rollback decided {failed_at - since:.1f} s after the switch "
           f"(deadline {DEADLINE} s); {CURRENT} ready and serving "
           f"{back - failed_at:.2f} s after the decision")
    for i in range(3):
        write(s, f"after-{i}")
    check_data(CURRENT)
    figure(f"bad upgrade: rows acknowledged before {before}, during the failed window {during}, "
           f"after 3; lost 0; same session {s.id == sid}")
    human = server.succeed(f"erlmcp status --config {CONFIG}")
    assert f"ROLLED BACK from {NEXT}" in human and "not ready" in human, human
    # The journal tells the story, in order.
    story = journal_since(since)
    marks = [f"{NEXT} started after {CURRENT}, on probation", "rolling back",
             f"{CURRENT} took over from {NEXT}, rolled back: {NEXT} failed"]
    where = [story.find(m) for m in marks]
    assert all(w >= 0 for w in where) and where == sorted(where), (marks, where, story[-3000:])
    log.info("the journal's story:\n" + "\n".join(
        line for line in story.splitlines()
        if any(k in line for k in ("upgrade", "rolling back", "rolled back", "release switched",
                                   "schema", "restore point", "guard"))))
    server.succeed("systemctl stop story-poller.service")

with subtest("a crash in the middle of the migration: after the boot the upgrade completes or never happened"):
    service_env("fault", None)
    service_env("pause", f"TEST_ERLMCP_PAUSE_AT=migrate.before_commit:{PAUSE_MS}")
    since = server_now()
    begin(NEXT)
    wait_for_pause(since, "migrate.before_commit")
    server.crash()
    server.start()
    server.wait_for_unit("erlmcp.service")
    u = settled()
    # Debian: the link points to the next release, which migrates again and
    # is confirmed (erlmcp-upgrade-resume.service). NixOS: a `test` switch
    # does not outlive a reboot; the booted system runs the current release
    # on the schema it knows (the migration never committed).
    expected = NEXT if DEBIAN else CURRENT
    t.assertEqual(u["release"], expected, u)
    check_data(expected)
    figure(f"crash in the migration (migrate.before_commit): after the boot {u['release']} "
           f"{u['state']}, schema {schema()}, lost 0")
    if DEBIAN:
        resume = journal_since(since, "erlmcp-upgrade-resume.service")
        assert f"{NEXT} confirmed" in resume, resume
    t.assertEqual(s.entity_names(), sorted(acknowledged))
    if u["release"] != CURRENT:
        go_back()

with subtest("a crash in the middle of the rollback: after the boot the rollback completes"):
    service_env("fault", f"TEST_ERLMCP_FAULT=unready@{NEXT}")
    since = server_now()
    begin(NEXT)
    server.wait_until_succeeds(
        f"curl -sf --max-time 5 {OPS}/status | jq -e '.upgrade.release == \"{NEXT}\"'", timeout=60)
    write(s, "rollback-crash-window")
    # The previous release pauses in its down migration: crash there.
    service_env("pause", f"TEST_ERLMCP_PAUSE_AT=migrate.before_commit:{PAUSE_MS}")
    wait_for_pause(since, "migrate.before_commit")
    server.crash()
    server.start()
    server.wait_for_unit("erlmcp.service")
    u = settled()
    t.assertEqual((u["release"], u["state"]), (CURRENT, "rolled_back"), u)
    assert NEXT in u["reason"], u
    check_data(CURRENT)
    figure(f"crash in the rollback's down migration: after the boot {CURRENT} rolled back "
           f"({u['reason']}), schema {schema()}, lost 0")

if DEBIAN:
    with subtest("a crash between the link flipped back and the restart: the boot finishes the rollback"):
        service_env("fault", f"TEST_ERLMCP_FAULT=unready@{NEXT}")
        since = server_now()
        begin(NEXT, pause=f"upgrade.rollback.after_flip:{PAUSE_MS}")
        server.wait_until_succeeds(
            f"curl -sf --max-time 5 {OPS}/status | jq -e '.upgrade.release == \"{NEXT}\"'", timeout=60)
        write(s, "flip-crash-window")
        wait_for_pause(since, "upgrade.rollback.after_flip")
        server.crash()
        server.start()
        server.wait_for_unit("erlmcp.service")
        u = settled()
        t.assertEqual((u["release"], u["state"]), (CURRENT, "rolled_back"), u)
        check_data(CURRENT)
        resume = journal_since(since, "erlmcp-upgrade-resume.service")
        assert "ROLLED BACK" in resume, resume
        figure(f"crash after upgrade.rollback.after_flip: after the boot {CURRENT} rolled back, "
               "erlmcp-upgrade-resume.service finished it, lost 0")

with subtest("every acknowledged write is served, in the same session"):
    t.assertEqual(s.entity_names(), sorted(acknowledged))
    log.info(f"{len(acknowledged)} writes acknowledged, lost 0; pinned restore points left: {pinned()}")
    log.info("figures:\n" + "\n".join(figures))
