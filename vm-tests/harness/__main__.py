"""Command line: `vm-tests/run [--backend nspawn|qemu] [--binary PATH] STORY|all`."""

import argparse
import glob
import os
import subprocess
import sys

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
    args = p.parse_args(argv)

    log = Logger()
    if args.cleanup:
        from .state import State
        try:
            state = State(log)
            state.acquire()  # removes the leftovers recorded in the state file
            state.release_all()
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
    if len(results) > 1:
        log.info("stories:\n" + "\n".join(f"  {'ok    ' if ok else 'FAILED'} {s}"
                                           for s, ok in results))
    passed = sum(ok for _, ok in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
