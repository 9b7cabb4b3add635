"""Command line: `vm-tests/run [--backend nspawn|qemu] [--binary PATH] [--jobs N] STORY|all`."""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

from . import provision
from .driver import Driver
from .errors import HarnessError
from .log import Logger


def build_binary(log):
    """`cargo build --features fault-injection` at the repo root -> target/debug/erlmcp."""
    cmd = ["cargo", "build", "--features", "fault-injection"]
    log.info(f"building erlmcp: {' '.join(cmd)} (in {provision.REPO})")
    proc = subprocess.run(cmd, cwd=provision.REPO)
    if proc.returncode != 0:
        raise HarnessError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); "
                           "pass --binary PATH to use a binary built elsewhere")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(provision.REPO, "target"))
    return os.path.join(target, "debug", "erlmcp")


def all_stories():
    """Every script with a machines.json is a story (others are preludes)."""
    decls = sorted(glob.glob(os.path.join(provision.VM_TESTS, "scenarios", "*.machines.json")))
    return [os.path.basename(d)[: -len(".machines.json")] for d in decls]


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="vm-tests/run",
        description="Run erlmcp scenario stories on Debian machines with real systemd.")
    p.add_argument("story", nargs="?", help="story name (vm-tests/scenarios/<story>.py), "
                   "a script path, or `all`")
    p.add_argument("--cleanup", action="store_true",
                   help="only remove what a killed run left behind, then exit")
    p.add_argument("--backend", choices=["nspawn", "qemu"], default="nspawn",
                   help="systemd-nspawn containers (default) or QEMU VMs")
    p.add_argument("--binary", help="erlmcp binary to install (default: build it with "
                   "`cargo build --features fault-injection`)")
    p.add_argument("--keep-logs", action="store_true",
                   help="collect journals and consoles even when the story passes")
    p.add_argument("--timeout", type=int, default=3600,
                   help="seconds before a story is stopped (default 3600)")
    p.add_argument("--jobs", type=int, default=1,
                   help="stories run at once, each in its own state slot and LAN "
                        "(default 1)")
    args = p.parse_args(argv)

    log = Logger()
    if args.cleanup:
        from .state import cleanup_all
        try:
            cleanup_all(log)  # removes what killed runs recorded in free slots
        except HarnessError as e:
            log.error(str(e))
            return 2
        log.info("clean")
        return 0
    if not args.story:
        p.error("a story (or `all`) is required")
    stories = all_stories() if args.story == "all" else [args.story]
    if not stories:
        log.error("no stories in vm-tests/scenarios/")
        return 2
    try:
        binary = os.path.abspath(args.binary) if args.binary else None
        if binary is None and any(provision.needs_erlmcp(provision.load_machines(s))
                                  for s in stories):
            binary = build_binary(log)
        if binary is not None and not os.path.isfile(binary):
            raise HarnessError(f"erlmcp binary not found: {binary}")
    except HarnessError as e:
        log.error(str(e))
        return 2

    if args.jobs > 1 and len(stories) > 1:
        results = run_parallel(log, stories, binary, args)
    else:
        results = run_serial(log, stories, binary, args)
    if len(results) > 1:
        log.info("stories:\n" + "\n".join(f"  {'ok    ' if ok else 'FAILED'} {s}"
                                           for s, ok in results))
    passed = sum(ok for _, ok in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def run_parallel(log, stories, binary, args):
    """Each story in its own `vm-tests/run` process (its own state slot,
    namespaces and LAN), at most args.jobs at a time; a story's output is
    printed whole when it ends."""
    pending, running, results = list(stories), [], []
    log.info(f"{len(stories)} stories, {args.jobs} at a time")
    while pending or running:
        while pending and len(running) < args.jobs:
            story = pending.pop(0)
            argv = [sys.executable, "-m", "harness", "--backend", args.backend,
                    "--timeout", str(args.timeout), story]
            if binary:
                argv += ["--binary", binary]
            if args.keep_logs:
                argv.append("--keep-logs")
            out = tempfile.TemporaryFile(mode="w+")
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=os.path.dirname(provision.VM_TESTS) or None,
                                    env=dict(os.environ, PYTHONPATH=provision.VM_TESTS))
            running.append((story, proc, out))
            # Staggered starts: boots and provisioning do not all land at once.
            time.sleep(2)
        for entry in list(running):
            story, proc, out = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            out.seek(0)
            sys.stdout.write(f"===== {story} =====\n{out.read()}")
            sys.stdout.flush()
            out.close()
            results.append((story, proc.returncode == 0))
        time.sleep(0.5)
    order = {s: i for i, s in enumerate(stories)}
    return sorted(results, key=lambda r: order[r[0]])


def run_serial(log, stories, binary, args):
    results = []
    for story in stories:
        log.subtests = []
        try:
            ok = Driver(story, args.backend, binary, args.keep_logs, args.timeout,
                        logger=log).run()
        except HarnessError as e:
            log.error(str(e))
            ok = False
        results.append((story, ok))
    return results


if __name__ == "__main__":
    sys.exit(main())
