"""The machine API scenarios are written against.

Names, signatures and semantics follow the NixOS test driver
(nixos/lib/test-driver, `BaseMachine`), so a scenario runs unchanged here and
under `pkgs.testers.runNixOSTest`.  This class holds everything that is the
same for every backend: polling helpers, unit queries, succeed/fail, file
copies through the shared directory.  A backend (nspawn.py, qemu.py) supplies
the few primitives at the bottom: boot, run one command, power off, pull the
plug, unplug the cable.

Commands run as root under `bash` with `set -euo pipefail`, stdin from
/dev/null.  `execute` returns (status, stdout); stderr is kept apart and put
in the message when `succeed`/`fail` raise, so a failure explains itself.
Commands may leave background processes holding stdout open: output goes to
a file, not a pipe, so the harness never waits for them.
"""

import os
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from .errors import MachineError, RequestedAssertionFailed


def retry(fn, timeout_seconds=900):
    """Call fn(last_try) every second until it returns True or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_seconds:
        if fn(False):
            return
        time.sleep(1)
    if not fn(True):
        raise RequestedAssertionFailed(
            f"action timed out after {time.monotonic() - start:.2f} seconds "
            f"(timeout={timeout_seconds})")


def _tail(text, lines=40):
    text = (text or "").rstrip("\n")
    parts = text.splitlines()
    if len(parts) > lines:
        return "\n".join(["[...]"] + parts[-lines:])
    return text


class Result:
    """One command's outcome inside a machine."""

    __slots__ = ("status", "stdout", "stderr")

    def __init__(self, status, stdout, stderr=""):
        self.status, self.stdout, self.stderr = status, stdout, stderr


class Machine:
    backend = "abstract"

    def __init__(self, name, workdir, logger, out_dir, shared_dir):
        self.name = name
        self.workdir = Path(workdir)
        self.logger = logger
        self.out_dir = Path(out_dir)
        self.shared_dir = Path(shared_dir)  # /tmp/shared inside the machine
        self.console_path = self.workdir / "console.log"
        self.blocked = False  # block() called and not undone

    def __repr__(self):
        return f"<{self.__class__.__name__} '{self.name}'>"

    # -- logging --------------------------------------------------------------
    def log(self, msg):
        self.logger.log(msg, {"machine": self.name})

    def nested(self, msg, attrs=None):
        return self.logger.nested(msg, {"machine": self.name, **(attrs or {})})

    # -- commands -------------------------------------------------------------
    def execute(self, command, check_return=True, check_output=True, timeout=900):
        """Run `command` in bash; return (status, stdout).

        `check_output=False` starts the command and returns (-2, "") without
        waiting (for commands that take the machine down); `check_return=False`
        returns (-1, stdout).
        """
        if not check_output:
            self.start()
            self.connect()
            self._spawn(f"set -euo pipefail; {command}")
            return (-2, "")
        r = self._run(command, timeout)
        if not check_return:
            return (-1, r.stdout)
        return (r.status, r.stdout)

    def _run(self, command, timeout):
        """Run `command`; return a Result with stderr (boots the machine if needed)."""
        self.start()
        self.connect()
        script = f"set -euo pipefail; {command}"
        if timeout is not None:
            wrapped = f"timeout --kill-after=10 {int(timeout)} bash -c {shlex.quote(script)}"
        else:
            wrapped = f"bash -c {shlex.quote(script)}"
        return self._exec(wrapped, timeout)

    def succeed(self, *commands, timeout=None):
        """Run each command; raise unless all exit 0; return their stdout."""
        output = ""
        for command in commands:
            with self.nested(f"must succeed: {command}"):
                r = self._run(command, timeout)
                if r.status != 0:
                    msg = f"{self.name}: command `{command}` failed (exit code {r.status})"
                    if r.status == 124 and timeout is not None:
                        msg += f" (timed out after {timeout} s)"
                    if r.stdout.strip():
                        msg += f"\n--- stdout ---\n{_tail(r.stdout)}"
                    if r.stderr.strip():
                        msg += f"\n--- stderr ---\n{_tail(r.stderr)}"
                    self.log(msg)
                    raise RequestedAssertionFailed(msg)
                output += r.stdout
        return output

    def fail(self, *commands, timeout=None):
        """Run each command; raise if any exits 0; return their stdout."""
        output = ""
        for command in commands:
            with self.nested(f"must fail: {command}"):
                r = self._run(command, timeout)
                if r.status == 0:
                    msg = f"{self.name}: command `{command}` unexpectedly succeeded"
                    if r.stdout.strip():
                        msg += f"\n--- stdout ---\n{_tail(r.stdout)}"
                    raise RequestedAssertionFailed(msg)
                output += r.stdout
        return output

    def wait_until_succeeds(self, command, timeout=900):
        """Repeat `command` every second until it exits 0; return its stdout."""
        output = ""

        def check(last_try):
            nonlocal output
            r = self._run(command, timeout)
            output = r.stdout
            if last_try and r.status != 0:
                self.log(f"last try of `{command}`: exit {r.status}\n"
                         f"{_tail(r.stdout + r.stderr, 20)}")
            return r.status == 0

        with self.nested(f"waiting for success: {command}"):
            retry(check, timeout)
        return output

    def wait_until_fails(self, command, timeout=900):
        """Repeat `command` every second until it exits non-zero; return its stdout."""
        output = ""

        def check(_last_try):
            nonlocal output
            r = self._run(command, timeout)
            output = r.stdout
            return r.status != 0

        with self.nested(f"waiting for failure: {command}"):
            retry(check, timeout)
        return output

    def sleep(self, secs):
        """Sleep in guest time (as the NixOS driver does)."""
        self.succeed(f"sleep {secs}")

    # -- systemd --------------------------------------------------------------
    def systemctl(self, q, user=None):
        if user is not None:
            q = q.replace("'", "\\'")
            return self.execute(
                f"su -l {user} --shell /bin/sh -c "
                f"$'XDG_RUNTIME_DIR=/run/user/`id -u` systemctl --user {q}'")
        return self.execute(f"systemctl {q}")

    def get_unit_info(self, unit, user=None):
        """`systemctl show UNIT` as a dict."""
        status, lines = self.systemctl(f'--no-pager show "{unit}"', user)
        if status != 0:
            raise RequestedAssertionFailed(
                f'{self.name}: retrieving systemctl info for unit "{unit}" '
                f"failed with exit code {status}")
        info = {}
        for line in lines.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value
        return info

    def get_unit_property(self, unit, property, user=None):
        status, lines = self.systemctl(
            f'--no-pager show "{unit}" --property="{property}"', user)
        if status != 0:
            raise RequestedAssertionFailed(
                f'{self.name}: retrieving property "{property}" of unit "{unit}" '
                f"failed with exit code {status}")
        key, sep, value = lines.strip().partition("=")
        if not sep or key != property:
            raise RequestedAssertionFailed(
                f'{self.name}: systemctl show --property "{property}" "{unit}" '
                f"produced invalid output: {lines!r}")
        return value

    def wait_for_unit(self, unit, user=None, timeout=900):
        """Wait until UNIT is active; raise if it fails or stays inactive with no job."""

        def check_active(_last_try):
            state = self.get_unit_property(unit, "ActiveState", user)
            if state == "failed":
                raise RequestedAssertionFailed(
                    f'{self.name}: unit "{unit}" reached state "failed"\n'
                    + self._unit_status(unit))
            if state == "inactive":
                _, jobs = self.systemctl("list-jobs --full 2>&1", user)
                if "No jobs" in jobs:
                    info = self.get_unit_info(unit, user)
                    if info.get("ActiveState") == state:
                        raise RequestedAssertionFailed(
                            f'{self.name}: unit "{unit}" is inactive and there are '
                            "no pending jobs\n" + self._unit_status(unit))
            return state == "active"

        with self.nested(f"waiting for unit {unit}"):
            retry(check_active, timeout)

    def _unit_status(self, unit):
        r = self._run(f"systemctl status --no-pager -l -n 20 {shlex.quote(unit)} 2>&1 || true",
                      60)
        return _tail(r.stdout, 30)

    def require_unit_state(self, unit, require_state="active"):
        with self.nested(f"checking if unit '{unit}' has reached state '{require_state}'"):
            state = self.get_unit_info(unit).get("ActiveState")
            if state != require_state:
                raise RequestedAssertionFailed(
                    f"{self.name}: expected unit '{unit}' to be in state "
                    f"'{require_state}' but it is in state '{state}'")

    def start_job(self, jobname, user=None):
        return self.systemctl(f"start {jobname}", user)

    def stop_job(self, jobname, user=None):
        return self.systemctl(f"stop {jobname}", user)

    # -- ports, files ---------------------------------------------------------
    def wait_for_open_port(self, port, addr="localhost", timeout=900):
        """Wait until something listens on addr:port (checked with `nc -z`)."""

        def port_is_open(_last_try):
            return self._run(f"nc -z {addr} {port}", 30).status == 0

        with self.nested(f"waiting for TCP port {port} on {addr}"):
            retry(port_is_open, timeout)

    def wait_for_closed_port(self, port, addr="localhost", timeout=900):
        def port_is_closed(_last_try):
            return self._run(f"nc -z {addr} {port}", 30).status != 0

        with self.nested(f"waiting for TCP port {port} on {addr} to be closed"):
            retry(port_is_closed, timeout)

    def wait_for_open_unix_socket(self, addr, is_datagram=False, timeout=900):
        flags = "-z -uU" if is_datagram else "-z -U"

        def socket_is_open(_last_try):
            return self._run(f"nc {flags} {addr}", 30).status == 0

        with self.nested(f"waiting for UNIX-domain socket {addr}"):
            retry(socket_is_open, timeout)

    def wait_for_file(self, filename, timeout=900):
        def check_file(_last_try):
            return self._run(f"test -e {filename}", 30).status == 0

        with self.nested(f"waiting for file '{filename}'"):
            retry(check_file, timeout)

    def copy_from_host(self, source, target):
        """Copy a host file or directory to `target` in the machine (root:root,
        mode bits kept), through the shared directory (/tmp/shared inside)."""
        src, dst = Path(source), Path(target)
        with tempfile.TemporaryDirectory(dir=self.shared_dir) as td:
            inside = Path("/tmp/shared") / Path(td).name / src.name
            if src.is_dir():
                shutil.copytree(src, Path(td) / src.name, symlinks=True)
            else:
                shutil.copy(src, Path(td) / src.name)
            self.succeed(f"mkdir -p {shlex.quote(str(dst.parent))}",
                         f"cp -r {shlex.quote(str(inside))} {shlex.quote(str(dst))}",
                         f"chown -R root:root {shlex.quote(str(dst))}")

    def copy_from_host_via_shell(self, source, target):
        import base64
        data = base64.b64encode(Path(source).read_bytes()).decode()
        self.succeed(f"mkdir -p $(dirname {target})",
                     f"echo -n {data} | base64 -d > {target}")

    def copy_from_machine(self, source, target_dir=""):
        """Copy a file or directory from the machine into the run's output
        directory (results/vm-tests/<story>-<time>/<target_dir>/)."""
        src = Path(source)
        with tempfile.TemporaryDirectory(dir=self.shared_dir) as td:
            inside = Path("/tmp/shared") / Path(td).name
            self.succeed(f"cp -r {shlex.quote(str(src))} {shlex.quote(str(inside))}/")
            dest = self.out_dir / target_dir / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            got = Path(td) / src.name
            if got.is_dir():
                shutil.copytree(got, dest, dirs_exist_ok=True)
            else:
                shutil.copy(got, dest)

    copy_from_vm = copy_from_machine

    # -- console --------------------------------------------------------------
    def get_console_log(self):
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_console_text(self, regex, timeout=None):
        pattern = re.compile(regex)

        def matches(_last_try):
            return pattern.search(self.get_console_log()) is not None

        with self.nested(f"waiting for {regex} to appear on console"):
            retry(matches, timeout if timeout is not None else 900)

    # -- lifecycle (public) ---------------------------------------------------
    def start(self, allow_reboot=False):
        """Boot the machine if it is not running.  Does not wait for the boot
        to finish: the next command (or wait_for_unit) waits for that."""
        if self.is_up():
            return
        self.log(f"starting ({self.backend})")
        self._start()

    def shutdown(self):
        """Power off cleanly (systemctl poweroff) and wait until it is off."""
        if not self.is_up():
            return
        with self.nested("shutting down"):
            self._shutdown()

    def crash(self):
        """Simulate a power failure: the machine stops at once, no clean-up."""
        if not self.is_up():
            return
        self.log("forced crash")
        self._crash()

    def reboot(self):
        """Clean power-off followed by a new boot (the disk is kept)."""
        self.shutdown()
        self.start()

    def wait_for_shutdown(self):
        if not self.is_up():
            return
        with self.nested("waiting for the machine to power off"):
            self._wait_for_shutdown()

    def block(self):
        """Unplug the machine's network cable (the LAN to the other machines)."""
        self.log("blocking the network link")
        self.blocked = True
        self._set_link(False)

    def unblock(self):
        """Plug the network cable back in."""
        self.log("unblocking the network link")
        self.blocked = False
        if self.is_up():
            self._set_link(True)

    # -- backend primitives ---------------------------------------------------
    def is_up(self):
        raise NotImplementedError

    def connect(self):
        """Block until commands can run in the booted machine."""
        raise NotImplementedError

    def _start(self):
        raise NotImplementedError

    def _exec(self, shell_command, timeout):
        """Run a bash command line; return Result(status, stdout, stderr)."""
        raise NotImplementedError

    def _spawn(self, command):
        """Start a command without waiting for it."""
        raise NotImplementedError

    def _shutdown(self):
        raise NotImplementedError

    def _crash(self):
        raise NotImplementedError

    def _wait_for_shutdown(self):
        raise NotImplementedError

    def _set_link(self, up):
        """Carrier of the machine's LAN link.  Backends keep it down while the
        machine is off (a powered-off host answers nothing, not even ARP)
        and restore `not self.blocked` when it boots."""
        raise NotImplementedError

    def collect_logs(self, dest):
        """Write journal.log and console.log for this machine into `dest`."""
        raise NotImplementedError

    def release(self):
        """Stop the machine now (end of run); idempotent."""
        raise NotImplementedError


def ensure(cond, msg):
    if not cond:
        raise MachineError(msg)


def host_path_in(root, path):
    return os.path.join(root, path.lstrip("/"))
