"""Backend `nspawn`: each machine is a systemd-nspawn container booting systemd.

    script -qfec "systemd-nspawn -D ROOT -b --register=no --keep-unit -M NAME
                  --network-namespace-path=/run/netns/emh-NAME ..." console.log

nspawn wants a terminal for the container console, so it runs under
`script`, which also writes the console to the machine's console.log.  The
container's PID 1 (the "leader") is the `systemd` child of the
`systemd-nspawn` process; commands enter all its namespaces with
`nsenter -t LEADER -a`.  Never start nspawn under `ip netns exec`: that
breaks its cgroup detection; the namespace is passed by path instead.

* crash(): SIGKILL to the leader.  The kernel kills the whole PID namespace
  at once, like pulling the power; nspawn then exits.
* shutdown(): `systemctl poweroff` inside, wait for nspawn to exit.
* block()/unblock(): the machine's veth peer on the lab bridge goes
  down/up (netlab.py).
* The root is an overlay (provision.py) that outlives the container, so a
  crashed machine boots again from the disk it had, as a VM would.
"""

import os
import shlex
import subprocess
import tempfile
import time

from .errors import MachineError
from .machine import Machine, Result
from .util import comm, descendants, kill_pid, proc_start_time

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NspawnMachine(Machine):
    backend = "nspawn"

    def __init__(self, name, workdir, logger, out_dir, shared_dir, state, lab, root,
                 netns_path):
        super().__init__(name, workdir, logger, out_dir, shared_dir)
        self.state = state
        self.lab = lab
        self.root = root
        self.netns_path = netns_path
        self.process = None  # the `script` process
        self.nspawn_pid = None
        self.leader = None
        self.connected = False
        self.boots = 0

    # -- lifecycle ------------------------------------------------------------
    def is_up(self):
        return self.process is not None and self.process.poll() is None

    def _start(self):
        self._reap()
        nspawn = [
            "systemd-nspawn", "-D", self.root, "-b", "--register=no", "--keep-unit",
            # Another slot's run may have a machine of the same name: nspawn
            # keeps per-name state under /run/systemd/nspawn. The hostname
            # comes from the machine's /etc/hostname all the same.
            "-M", self.name if not self.state.slot else f"{self.name}-{self.state.slot}",
            f"--network-namespace-path={self.netns_path}",
            "--link-journal=no", "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
            f"--bind={self.shared_dir}:/tmp/shared", "--console=interactive",
        ]
        self.boots += 1
        self.lab.reset(self.name)
        self.lab.set_link(self.name, not self.blocked)
        with open(self.console_path, "a") as f:
            f.write(f"\n===== harness: boot {self.boots} of {self.name} =====\n")
        env = dict(os.environ, SYSTEMD_LOG_COLOR="0", TERM="dumb")
        # stdin is a pipe we never write to: `script` must not see EOF, and
        # start_new_session keeps the terminal's Ctrl-C away from the machines
        self.process = subprocess.Popen(
            ["script", "-qfec", shlex.join(nspawn), "-a", str(self.console_path)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env)
        self.state.add("proc", self.process.pid, machine=self.name)
        self.connected = False
        self.leader = self.nspawn_pid = None

    def connect(self):
        if self.connected:
            return
        deadline = time.monotonic() + 120
        with self.nested("waiting for the container to boot"):
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise MachineError(
                        f"{self.name}: systemd-nspawn exited with {self.process.returncode} "
                        f"while booting; console:\n{self._console_tail()}")
                if self.leader is None:
                    self._find_leader()
                if self.leader is not None and os.path.exists(
                        f"/proc/{self.leader}/root/run/systemd/private"):
                    self.connected = True
                    return
                time.sleep(0.05)
        raise MachineError(f"{self.name}: container did not boot within 120 s; "
                           f"console:\n{self._console_tail()}")

    def _find_leader(self):
        for pid in descendants(self.process.pid):
            if comm(pid) == "systemd-nspawn":
                self.nspawn_pid = pid
                kids = [c for c in descendants(pid) if comm(c) == "systemd"]
                # the leader is nspawn's direct child once it exec'd systemd
                for k in kids:
                    try:
                        ppid = int(open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
                    if ppid == pid:
                        self.leader = k
                        self.state.add("proc", self.nspawn_pid, machine=self.name)
                        self.state.add("proc", self.leader, machine=self.name)
                        self.log(f"booting: nspawn pid {self.nspawn_pid}, "
                                 f"container PID 1 is {self.leader}")
                        return

    def _console_tail(self, n=40):
        return "\n".join(self.get_console_log().splitlines()[-n:])

    def _nsenter(self, argv):
        return ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={PATH}",
                "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root", *argv]

    def _exec(self, shell_command, timeout):
        # output to files, not pipes: a command may leave a daemon holding them
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self._nsenter(["bash", "-c", shell_command]),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                status = proc.wait(timeout=None if timeout is None else timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                status = 124
            out.seek(0)
            err.seek(0)
            return Result(status, out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"))

    def _spawn(self, command):
        subprocess.Popen(self._nsenter(["bash", "-c", command]), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)

    def _shutdown(self):
        self.connect()
        self._spawn("systemctl poweroff")
        self._wait_for_shutdown(timeout=120)

    def _wait_for_shutdown(self, timeout=None):
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log(f"did not power off within {timeout} s: killing it")
            self._crash()
        self._reap()

    def _crash(self):
        if self.leader is None:
            self._find_leader()
        if self.leader is not None:
            kill_pid(self.leader, proc_start_time(self.leader))
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in (self.nspawn_pid, self.process.pid):
                if pid:
                    kill_pid(pid)
            self.process.wait(timeout=10)
        self._reap()

    def _reap(self):
        """Forget the processes of the last boot once they have exited."""
        if self.process is not None and self.process.poll() is None:
            return
        for pid in (self.leader, self.nspawn_pid, self.process and self.process.pid):
            if pid:
                self.state.remove("proc", pid)
        self.process = None
        self.leader = self.nspawn_pid = None
        self.connected = False
        try:
            self.lab.set_link(self.name, False)  # powered off: no carrier
        except Exception:
            pass  # the lab may already be gone at the end of a run

    def _set_link(self, up):
        self.lab.set_link(self.name, up)

    # -- results --------------------------------------------------------------
    def collect_logs(self, dest):
        os.makedirs(dest, exist_ok=True)
        journal = os.path.join(dest, f"{self.name}.journal.log")
        if self.is_up() and self.connected:
            r = self._exec("journalctl -b --no-pager -o short-precise", 120)
            text = r.stdout + (f"\n[stderr]\n{r.stderr}" if r.status else "")
        else:
            # machine is down (crashed or powered off): read its disk
            proc = subprocess.run(
                ["journalctl", "-D", os.path.join(self.root, "var/log/journal"),
                 "--no-pager", "-o", "short-precise"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            text = "[machine down: whole journal read from its disk]\n" + proc.stdout
        with open(journal, "w") as f:
            f.write(text)
        if self.console_path.exists():
            with open(os.path.join(dest, f"{self.name}.console.log"), "w") as f:
                f.write(self.get_console_log())

    def release(self):
        if self.process is None:
            return
        if self.is_up():
            self._crash()
        self._reap()
