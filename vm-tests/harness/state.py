"""What a run created, written down so that it is always removed.

A run takes one of SLOTS slots: an exclusive lock (/run/erlmcp-ci/lock, or
lock.N for slot N > 0) and a state file (state.json, state.N.json) in which
it records every resource it creates (processes with their start times,
mounts, network namespaces, directories) as it creates it.  The slot also
names the run's network namespaces (netlab.py), so runs in different slots
(`vm-tests/run --jobs N`, or two runs started by hand) do not meet.
`release_all()` removes the resources newest first; the driver calls it
from a `finally` and from SIGINT/SIGTERM handlers.  When a run was killed
outright (SIGKILL, OOM), the next run that takes its slot finds its state
file and removes its leftovers before doing anything else (`--cleanup`
does it for every free slot).  /run is a tmpfs: after a reboot the
namespaces, mounts and processes are gone anyway, and so are the files.
"""

import fcntl
import json
import os
import signal
import subprocess

from .errors import HarnessError
from .util import kill_pid, proc_start_time, remove_tree, umount_under

STATE_DIR = "/run/erlmcp-ci"
SLOTS = 8


def slot_files(slot):
    """(lock file, state file) of a slot; slot 0 keeps the historic names."""
    if slot == 0:
        return os.path.join(STATE_DIR, "lock"), os.path.join(STATE_DIR, "state.json")
    return (os.path.join(STATE_DIR, f"lock.{slot}"),
            os.path.join(STATE_DIR, f"state.{slot}.json"))


def _try_lock(path):
    """An fd holding the exclusive lock on `path`, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class State:
    def __init__(self, log):
        self.log = log
        self.resources = []
        self.lock_fd = None
        self.slot = None
        self.state_file = None

    # -- lifecycle ----------------------------------------------------------
    def acquire(self):
        """Take the first free slot; clean what a killed run left in it."""
        os.makedirs(STATE_DIR, exist_ok=True)
        for slot in range(SLOTS):
            lock, state_file = slot_files(slot)
            fd = _try_lock(lock)
            if fd is not None:
                break
        else:
            raise HarnessError(f"all {SLOTS} vm-tests slots are taken (locks in {STATE_DIR}); "
                               "wait for a run to end")
        self.lock_fd, self.slot, self.state_file = fd, slot, state_file
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if os.path.exists(state_file):
            self._clean_leftovers()
        self._save()

    def _clean_leftovers(self):
        try:
            with open(self.state_file, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {"resources": []}
        res = old.get("resources", [])
        if res:
            self.log.warning(f"removing {len(res)} leftovers of an earlier run "
                             f"(pid {old.get('owner')}) recorded in {self.state_file}")
        for r in reversed(res):
            self._release_one(r)
        os.unlink(self.state_file)

    def _save(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"owner": os.getpid(), "slot": self.slot, "resources": self.resources},
                      f, indent=1)
        os.replace(tmp, self.state_file)

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
            if self.state_file and os.path.exists(self.state_file):
                os.unlink(self.state_file)
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


def cleanup_all(log):
    """Remove the leftovers of killed runs in every slot no run holds."""
    os.makedirs(STATE_DIR, exist_ok=True)
    busy = []
    for slot in range(SLOTS):
        lock, state_file = slot_files(slot)
        fd = _try_lock(lock)
        if fd is None:
            busy.append(slot)
            continue
        try:
            st = State(log)
            st.lock_fd, st.slot, st.state_file = fd, slot, state_file
            if os.path.exists(state_file):
                st._clean_leftovers()
        finally:
            os.close(fd)
    if busy:
        log.info(f"slots {busy} are in use by running runs: left alone")
