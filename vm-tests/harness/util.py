"""Small helpers shared by the modules: running commands, mounts, processes."""

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time

from .errors import HarnessError


def run(cmd, what=None, check=True, input=None, timeout=None, env=None, quiet=False):
    """Run `cmd` (a list), return its CompletedProcess with text output.

    On failure raise HarnessError naming `what`, the command, the exit code
    and the last lines of its combined output.
    """
    try:
        proc = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=env)
    except FileNotFoundError as e:
        raise HarnessError(f"{what or cmd[0]}: {cmd[0]} not found ({e})") from None
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{what or cmd[0]}: `{' '.join(cmd)}` timed out after {timeout} s") from None
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise HarnessError(f"{what or 'command failed'}: `{' '.join(map(str, cmd))}` "
                           f"exited {proc.returncode}:\n{tail}")
    return proc


def mounts_under(path):
    """Mount points at or below `path`, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
                found.append(mnt)
    return sorted(set(found), key=len, reverse=True)


def umount_under(path):
    for mnt in mounts_under(path):
        r = subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)


def remove_tree(path):
    """Unmount whatever is mounted below `path`, then delete it."""
    if not os.path.lexists(path):
        return
    umount_under(path)
    left = mounts_under(path)
    if left:
        raise HarnessError(f"refusing to delete {path}: still mounted: {left}")
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--one-file-system", path])


def proc_start_time(pid):
    """Kernel start time of `pid` (clock ticks since boot), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def proc_alive(pid, start_time=None):
    st = proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def kill_pid(pid, start_time=None, sig=signal.SIGKILL, wait=10.0):
    """Send `sig` to `pid` if it is still the process we started; wait for it."""
    if not proc_alive(pid, start_time):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc_alive(pid, start_time):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


@contextlib.contextmanager
def exclusive(path):
    """Hold an exclusive lock on `path` (created if needed), waiting for it:
    concurrent runs take turns at what they share (apt, the rootfs cache)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
