"""Renders bench/replication's results as the markdown section of
docs/performance.md: throughput and latency per mode, ratios against
standalone, the standby's lag (apply delay) and the primary's wait."""
import json
import re
import sys


def quantile(path, name, q):
    """q-quantile of a Prometheus histogram (linear within a bucket)."""
    buckets = []
    for line in open(path):
        m = re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            span = c - prev_c
            return prev_le + (le - prev_le) * ((rank - prev_c) / span if span else 1.0)
        prev_le, prev_c = le, c
    return None


def ms(seconds):
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def lat(us):
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


rows = [json.loads(line) for line in open(sys.argv[1])]
invocation, before, after, cores, version, rev = sys.argv[2:8]
best = {}
for r in rows:
    if r["mode"] not in best or r["rps"] > best[r["mode"]]["rps"]:
        best[r["mode"]] = r
base = best["standalone"]["rps"]
out = ["## Replication: writes standalone, async and sync", ""]
out.append(
    f"Command: `{invocation}` ({version}, built from {rev}); {cores} cores shared by the load "
    f"generator and both nodes, load average {before} at the start, {after} at the end. "
    "Each node on loopback, `synchronous = FULL`; the tool call is `create_entities` of one new "
    f"entity with one observation, c={best['standalone']['concurrency']} sessions, JSON responses, "
    "no audit rows. Sync: a write is answered once the standby has it durably; async: on the "
    "local commit. Lag is the standby's apply delay (from the primary's commit to the standby's "
    "durable apply, `erlmcp_replication_apply_delay_seconds`); the wait is how long sync writes "
    "waited for the standby (`erlmcp_replication_ack_wait_seconds`)."
)
out.append("")
out.append("| mode | writes/s | p50 | p99 | ÷ standalone | standby lag p50 | p99 | primary wait p99 |")
out.append("|---|---|---|---|---|---|---|---|")
for mode in ["standalone", "async", "sync"]:
    r = best.get(mode)
    if not r:
        continue
    lag50 = lag99 = wait99 = None
    if mode != "standalone":
        s, p = r["metrics"] + "-standby.metrics", r["metrics"] + "-primary.metrics"
        lag50 = quantile(s, "erlmcp_replication_apply_delay_seconds", 0.5)
        lag99 = quantile(s, "erlmcp_replication_apply_delay_seconds", 0.99)
        wait99 = quantile(p, "erlmcp_replication_ack_wait_seconds", 0.99) if mode == "sync" else None
    out.append(
        f"| {mode} | {r['rps']:,.0f} | {lat(r['p50_us'])} | {lat(r['p99_us'])} | "
        f"{r['rps'] / base:.2f}× | {ms(lag50)} | {ms(lag99)} | {ms(wait99)} |"
    )
    if r.get("errors"):
        out.append(f"|  | {r['errors']} errors: {r.get('first_error', '')} | | | | | | |")
out.append("")
out.append(
    "Targets (issue 15): sync keeps at least 0.5× the standalone write throughput at c=16; "
    "async lag p99 under 100 ms."
)
print("\n".join(out))
