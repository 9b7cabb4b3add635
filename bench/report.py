#!/usr/bin/env python3
"""Turns one bench/run output directory (results.jsonl + meta.json) into the
markdown report that bench/run prints and writes to docs/performance.md.

    python3 bench/report.py bench/out/<run>

Standard library only.
"""

import json
import sys
from pathlib import Path

NAMES = {
    "erlmcp": "erlmcp",
    "ceiling": "hyper ceiling (canned JSON-RPC)",
    "rmcp": "rmcp 3.11 + TCP_NODELAY (fair)",
    "rmcp-shipped": "rmcp 3.11 as shipped",
    "ts": "TypeScript SDK",
    "py": "Python SDK",
}
ORDER = ["erlmcp", "ceiling", "rmcp", "rmcp-shipped", "ts", "py"]
CONC = [1, 16, 64]


def fmt_rps(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_us(v):
    if v is None:
        return "—"
    if v >= 10_000:
        return f"{v / 1000:,.0f} ms"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def fmt_ratio(v):
    if v is None:
        return "—"
    return f"{v:.2f}×" if v < 10 else f"{v:,.0f}×"


def main(out_dir):
    out = Path(out_dir)
    meta = json.loads((out / "meta.json").read_text())
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]
    load = {}
    failed = []
    rows.sort(key=lambda r: r.get("failed", False))
    for r in rows:
        if r["kind"] == "load":
            key = (r["transport"], r["method"], r["server"], r["c"])
            if r.get("failed"):
                failed.append(key)
            elif key not in load or r["r"]["rps"] > load[key]["rps"]:
                load[key] = r["r"]  # best round

    def rps(t, m, s, c):
        r = load.get((t, m, s, c))
        return r["rps"] if r else None

    p = []
    w = p.append
    w("# erlmcp performance\n")
    w(
        f"Latest run: **{meta['date']}** on **{meta['cores']} cores** ({meta['cpu']}, Linux {meta['kernel']}), "
        f"shared by the load generator and the server under test; load average (1/5/15 min) "
        f"{meta.get('loadavg', '?')}.\n"
    )
    w(f"Command (from the repository root): `{meta['command']}`\n")
    w(
        f"Versions: erlmcp {meta['erlmcp']}; rmcp {meta['rmcp']}; TypeScript SDK {meta['ts_sdk']} on Node {meta['node']}; "
        f"Python SDK {meta['py_sdk']} ({meta['python']}, uvicorn); server-memory {meta['server_memory']}; {meta['rustc']}.\n"
    )
    w(
        f"Each figure: {meta['duration_s']} s measured after {meta['warmup_s']} s of warm-up"
        + (f", the best of {meta['rounds']} rounds (servers in alternating order)" if meta.get("rounds", 1) > 1 else "")
        + "; "
        "`c` sessions (HTTP: one keep-alive connection each, one request at a time) or `c` requests "
        "outstanding (stdio). Latency is from sending a request to having read its whole response "
        "(for SSE, the end of the POST's stream). Tool: `test_simple_text`. "
        "Ratios are erlmcp's req/s divided by the row's; on the ceiling row that is erlmcp ÷ ceiling.\n"
    )

    transports = sorted({k[0] for k in list(load) + failed}, key=lambda t: ["http-json", "http-sse", "stdio"].index(t) if t in ("http-json", "http-sse", "stdio") else 9)
    w("## Requests per second and latency\n")
    head = "| transport | method | server |" + "".join(f" c={c} req/s | p50 | p99 |" for c in CONC) + " erlmcp ÷ this (c=1 / 16 / 64) |"
    w(head)
    w("|" + "---|" * (3 + 3 * len(CONC) + 1))
    for t in transports:
        for m in ["tools/call", "tools/list"]:
            for s in ORDER:
                if not any((t, m, s, c) in load or (t, m, s, c) in failed or (t, m, s, 0) in failed for c in CONC):
                    continue
                cells = []
                ratios = []
                for c in CONC:
                    r = load.get((t, m, s, c))
                    if r:
                        err = f" ({r['errors']} err)" if r["errors"] else ""
                        cells.append(f" {fmt_rps(r['rps'])}{err} | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} |")
                    else:
                        cells.append(" failed | | |")
                    e, o = rps(t, m, "erlmcp", c), rps(t, m, s, c)
                    ratios.append(fmt_ratio(e / o) if (e and o and s != "erlmcp") else "—")
                w(f"| {t} | {m} | {NAMES.get(s, s)} |" + "".join(cells) + " " + " / ".join(ratios) + " |")
    w("")
    w("tools/list is not the same payload everywhere: erlmcp lists every tool of its enabled toolsets "
      "(conformance fixture, memory, files), the peers and the ceiling list the one fixture tool.\n")

    # The load generator's own headroom.
    w("## Load generator ceiling\n")
    w("The most the load generator measured against the bare hyper server (and the bare stdio loop), "
      "against the highest figure it reported for any real server on the same transport:\n")
    w("| transport | ceiling req/s (best c) | best real server req/s | headroom |")
    w("|---|---|---|---|")
    for t in transports:
        ceil = max((v["rps"] for (tt, m, s, c), v in load.items() if tt == t and s == "ceiling"), default=None)
        best = max(((v["rps"], s) for (tt, m, s, c), v in load.items() if tt == t and s != "ceiling"), default=None)
        if ceil and best:
            w(f"| {t} | {fmt_rps(ceil)} | {fmt_rps(best[0])} ({NAMES.get(best[1], best[1])}) | {ceil / best[0]:.2f}× |")
    w("")

    rss = [r for r in rows if r["kind"] == "rss"]
    if rss:
        sizes = meta["sessions"].split()
        w("## Resident memory (VmRSS) with idle sessions\n")
        w("Sessions opened by `initialize` + `notifications/initialized` over 16 connections and left idle (HTTP, SSE mode).\n")
        w("| server | idle |" + "".join(f" {int(n):,} sessions |" for n in sizes))
        w("|---|---|" + "---|" * len(sizes))
        for s in ORDER:
            for r in rss:
                if r["server"] == s:
                    mib = lambda k: "failed" if r.get(k) is None else f"{r[k] / 1024:.1f} MiB"
                    w(f"| {NAMES[s]} | {mib('idle_kib')} |" + "".join(f" {mib('s' + n)} |" for n in sizes))
        w("")

    st = [r for r in rows if r["kind"] == "startup"]
    if st:
        w("## Startup\n")
        w("From exec to the first successful `initialize` on `/mcp` (median of the runs, fresh data dir each run); "
          "for erlmcp also to `READY=1` on a `NOTIFY_SOCKET` the load generator created.\n")
        w("| server | first answer | READY=1 | runs (first answer, ms) |")
        w("|---|---|---|---|")
        for s in ORDER:
            for r in st:
                if r["server"] != s:
                    continue
                if r.get("failed"):
                    w(f"| {NAMES[s]} | failed | | |")
                    continue
                x = r["r"]
                ready = "—" if x.get("ready_median_ms") is None else f"{x['ready_median_ms']:.1f} ms"
                w(f"| {NAMES[s]} | {x['http_median_ms']:.1f} ms | {ready} | {', '.join(f'{v:.0f}' for v in x['http_ms'])} |")
        w("")

    mem = {(r["impl"], r["n"]): r for r in rows if r["kind"] == "memory"}
    if mem:
        w("## Memory toolset: erlmcp `memory` vs `@modelcontextprotocol/server-memory`\n")
        w("Over stdio, one call at a time. create_entities: batches of new entities (100 each; 1,000 at 100k) up to the size "
          "(mean per call over the whole fill, and over the last tenth, i.e. writes at full size); then "
          "100 add_observations (one observation on a random entity) and 100 search_nodes (a query matching one "
          "entity) at that size. erlmcp runs with its defaults (SQLite, synchronous=FULL: every call is durable); "
          "server-memory rewrites its JSONL file on every write.\n")
        w("| entities | call | erlmcp mean | server-memory mean | erlmcp speed-up |")
        w("|---|---|---|---|---|")
        for n in sorted({k[1] for k in mem}):
            e, ref = mem.get(("erlmcp", n)), mem.get(("reference", n))
            b = (e or ref or {}).get("r", {}).get("batch", 100)
            for phase, field, label in [
                ("create_entities", "mean_ms", f"create_entities ×{b}, whole fill"),
                ("create_entities", "tail_mean_ms", f"create_entities ×{b}, at full size"),
                ("add_observations", "mean_ms", "add_observations"),
                ("search_nodes", "mean_ms", "search_nodes"),
            ]:
                ev = None if not e or e.get("failed") else e["r"][phase][field]
                rv = None if not ref or ref.get("failed") else ref["r"][phase][field]
                fm = lambda v: "failed" if v is None else f"{v:.3f} ms"
                ratio = fmt_ratio(rv / ev) if (ev and rv) else "—"
                w(f"| {n:,} | {label} | {fm(ev)} | {fm(rv)} | {ratio} |")
        w("")

    # Targets (goals, not assertions).
    w("## Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")

    def target(name, value, ok, fmt=fmt_ratio):
        if value is None:
            w(f"| {name} | not measured | — |")
        else:
            w(f"| {name} | {fmt(value)} | {'yes' if ok(value) else '**no**'} |")

    for t in ["http-json", "http-sse"]:
        e = rps(t, "tools/call", "erlmcp", 64)
        for s, k, label in [("rmcp", 3, "fair rmcp"), ("ts", 10, "TypeScript SDK")]:
            o = rps(t, "tools/call", s, 64)
            target(f"{t} tools/call c=64 ≥ {k}× {label}", e / o if e and o else None, lambda v, k=k: v >= k)
        c = rps(t, "tools/call", "ceiling", 64)
        target(f"{t} tools/call c=64 ≥ ½ hyper ceiling", e / c if e and c else None, lambda v: v >= 0.5)
        r = load.get((t, "tools/call", "erlmcp", 16))
        target(f"{t} p99 < 1 ms at c=16", r["p99_us"] if r else None, lambda v: v < 1000, fmt_us)
    for c in CONC:
        e, o = rps("stdio", "tools/call", "erlmcp", c), rps("stdio", "tools/call", "rmcp", c)
        target(f"stdio c={c} ≥ 2× rmcp", e / o if e and o else None, lambda v: v >= 2)
    for r in rss:
        if r["server"] == "erlmcp":
            v = r.get("s10000")
            target("10k idle sessions < 100 MiB RSS", None if v is None else v / 1024, lambda v: v < 100, lambda v: f"{v:.1f} MiB")
    n = max((k[1] for k in mem), default=None)
    if n:
        e, ref = mem.get(("erlmcp", n)), mem.get(("reference", n))
        for phase, field, label in [("create_entities", "tail_mean_ms", "create_entities"), ("add_observations", "mean_ms", "add_observations")]:
            ev = None if not e or e.get("failed") else e["r"][phase][field]
            rv = None if not ref or ref.get("failed") else ref["r"][phase][field]
            target(f"memory writes ({label}) at {n:,} entities ≥ 100× server-memory", rv / ev if ev and rv else None, lambda v: v >= 100)
    w("")
    if failed:
        w("Failed runs: " + ", ".join(f"{s} {t} {m} c={c}" for (t, m, s, c) in failed) + "\n")
    print("\n".join(p))


if __name__ == "__main__":
    main(sys.argv[1])
