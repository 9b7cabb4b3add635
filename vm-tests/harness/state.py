"""What a run created, written down so that it is always removed.

A run takes an exclusive lock (/run/erlmcp-ci/lock) and records every
resource it creates (processes with their start times, mounts, network
namespaces, directories) in /run/erlmcp-ci/state.json as it creates it.
`release_all()` removes them newest first; the driver calls it from a
`finally` and from SIGINT/SIGTERM handlers.  When a run was killed outright
(SIGKILL, OOM), the next run finds its state file and removes its
leftovers before doing anything else.  /run is a tmpfs: after a reboot the
namespaces, mounts and processes are gone anyway, and so is the file.
"""

import fcntl
import json
import os
import signal
import subprocess

from .errors import HarnessError
from .util import kill_pid, proc_start_time, remove_tree, umount_under

STATE_DIR = "/run/erlmcp-ci"
STATE_FILE = os.path.join(STATE_DIR, "state.json")
LOCK_FILE = os.path.join(STATE_DIR, "lock")


class State:
    def __init__(self, log):
        self.log = log
        self.resources = []
        self.lock_fd = None

    # -- lifecycle ----------------------------------------------------------
    def acquire(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        self.lock_fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.lock_fd, 64, 0).decode(errors="replace").strip()
            raise HarnessError(f"another vm-tests run holds {LOCK_FILE} (pid {other or '?'}); "
                               "wait for it or stop it") from None
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, f"{os.getpid()}\n".encode(), 0)
        if os.path.exists(STATE_FILE):
            self._clean_leftovers()
        self._save()

    def _clean_leftovers(self):
        try:
            with open(STATE_FILE, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {"resources": []}
        res = old.get("resources", [])
        if res:
            self.log.warning(f"removing {len(res)} leftovers of an earlier run "
                             f"(pid {old.get('owner')}) recorded in {STATE_FILE}")
        for r in reversed(res):
            self._release_one(r)
        os.unlink(STATE_FILE)

    def _save(self):
        tmp = STATE_FILE + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"owner": os.getpid(), "resources": self.resources}, f, indent=1)
        os.replace(tmp, STATE_FILE)

    # -- registry -------------------------------------------------------------
    def add(self, kind, value, **extra):
        entry = {"kind": kind, "value": value, **extra}
        if kind == "proc":
            entry["start"] = proc_start_time(value)
        self.resources.append(entry)
        self._save()
        return entry

    def remove(self, kind, value):
        self.resources = [r for r in self.resources
                          if not (r["kind"] == kind and r["value"] == value)]
        self._save()

    def release(self, kind, value):
        """Remove one resource now and forget it."""
        for r in [r for r in self.resources if r["kind"] == kind and r["value"] == value]:
            self._release_one(r)
        self.remove(kind, value)

    def release_all(self):
        errors = []
        # ignore further SIGINT/SIGTERM while cleaning up: a second Ctrl-C
        # must not leave half of the machines behind
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.resources:
                r = self.resources[-1]
                try:
                    self._release_one(r)
                except Exception as e:  # keep going: remove everything we can
                    errors.append(f"{r['kind']} {r['value']}: {e}")
                self.resources.pop()
                self._save()
            if os.path.exists(STATE_FILE):
                os.unlink(STATE_FILE)
            if self.lock_fd is not None:
                os.close(self.lock_fd)  # releases the lock (next story may take it)
                self.lock_fd = None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if errors:
            self.log.error("clean-up problems:\n  " + "\n  ".join(errors))
        return errors

    def _release_one(self, r):
        kind, value = r["kind"], r["value"]
        if kind == "proc":
            kill_pid(value, r.get("start"), signal.SIGKILL)
        elif kind == "mount":
            umount_under(value)
        elif kind == "netns":
            subprocess.run(["ip", "netns", "del", value], stderr=subprocess.DEVNULL)
        elif kind == "tree":
            remove_tree(value)
        elif kind == "file":
            if os.path.lexists(value):
                os.unlink(value)
        else:
            raise HarnessError(f"unknown resource kind {kind}")
