"""Backend `qemu`: each machine is a QEMU VM booting the same rootfs.

Disk: the machine's provisioned overlay tree (the same one nspawn would
boot) plus a few VM-only files, turned into an ext4 image with
`mkfs.ext4 -d` (about 3 s for the 750 MB tree).  The image is the machine's
disk for the whole run, so a crashed VM boots again from what it had.

Boot: direct kernel boot of the rootfs's own kernel (uncompressed `vmlinux`
extracted from vmlinuz once and cached, which boots faster under TCG) with a
tiny initrd (initrd.py: static busybox + virtio/ext4 modules, no udev),
`-accel tcg,thread=multi -cpu max`.  KVM is used when a one-off
probe boot with it works (cached in /var/cache/erlmcp-ci/kvm-probe.json);
CI_ERLMCP_ACCEL=tcg|kvm overrides.  On this kind of host /dev/kvm is
kvm_pvm and cannot run stock Debian kernels ("KVM internal error.
Suberror: 1").

Driver shell: `harness-backdoor.service` (DefaultDependencies=no) runs a
small request loop (files/harness-backdoor) on the virtio-serial port
`harness-shell`; the harness listens on a unix socket before QEMU starts and
QEMU connects to it.

LAN: `-netdev socket,mcast=230.0.0.1:PORT,localaddr=127.0.0.1`, with every
QEMU process started inside the lab network namespace (netlab.py), so the
multicast traffic stays on that namespace's loopback.  Addresses are set in
the guest by `harness-lan.service`.  block()/unblock() = HMP `set_link`.

Shared directory: 9p (`mount_tag=shared`) at /tmp/shared, as in NixOS tests.
"""

import base64
import glob
import json
import lzma
import os
import shutil
import socket
import subprocess
import time
import uuid

from . import initrd, netlab, rootfs
from .errors import HarnessError, MachineError
from .machine import Machine, Result
from .provision import HARNESS_FILES, enable_units, install_file, write_file
from .util import kill_pid, run

MCAST = "230.0.0.1"
MCAST_PORT = 31337
BOOT_TIMEOUT = 600
DISK_SIZE = "6G"


def _is_static(path):
    """True if the ELF file at `path` has no program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], "little") != 3
               for i in range(0, len(table), phentsize))


def _extract_vmlinux(vmlinuz, dest):
    """Decompress the xz payload of a bzImage into an ELF vmlinux."""
    data = open(vmlinuz, "rb").read()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        return False
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        elf = dec.decompress(data[start:])
    except lzma.LZMAError:
        return False
    if not elf.startswith(b"\x7fELF"):
        return False
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        f.write(elf)
    os.replace(tmp, dest)
    return True


class QemuImage:
    """Kernel, initrd and accelerator shared by all VMs of a run."""

    def __init__(self, log, state, tree):
        self.log, self.state, self.tree = log, state, tree
        self.kernel = self.initrd = None
        self.accel = os.environ.get("CI_ERLMCP_ACCEL", "auto")

    def prepare(self):
        kernels = sorted(glob.glob(os.path.join(self.tree, "boot", "vmlinuz-*")))
        if not kernels:
            raise HarnessError(f"no kernel in {self.tree}/boot: the rootfs lacks "
                               "linux-image-amd64 (see rootfs.KERNEL_PACKAGES)")
        vmlinuz = kernels[-1]
        version = os.path.basename(vmlinuz)[len("vmlinuz-"):]
        self.initrd = self._vm_initrd(version)
        cached = rootfs.paths()["tree"] + f".vmlinux-{version}"
        if not os.path.exists(cached):
            self.log.info(f"qemu: extracting vmlinux from {vmlinuz}")
            if not _extract_vmlinux(vmlinuz, cached):
                self.log.warning("qemu: no xz payload in vmlinuz; booting it compressed")
                cached = vmlinuz
        self.kernel = cached
        if self.accel not in ("auto", "tcg", "kvm"):
            raise HarnessError(f"CI_ERLMCP_ACCEL={self.accel}: use auto, tcg or kvm")
        if self.accel == "auto":
            self.accel = "kvm" if self._kvm_works() else "tcg"
        self.log.info(f"qemu: kernel {os.path.basename(self.kernel)}, accel {self.accel}")

    def _vm_initrd(self, version):
        """The tiny initrd (initrd.py), built once per kernel."""
        cached = rootfs.paths()["tree"] + f".initrd-tiny{initrd.VERSION}-{version}"
        if os.path.exists(cached):
            return cached
        busybox = shutil.which("busybox")
        if busybox is None or not _is_static(busybox):
            raise HarnessError(f"the VM initrd needs a static busybox; {busybox or 'none'} "
                               "is not (apt-get install busybox-static)")
        mods = initrd.build(self.tree, version, busybox, cached)
        self.log.info(f"qemu: built the VM initrd ({len(mods)} modules) at {cached}")
        return cached

    def _kvm_works(self):
        """Boot the kernel once under KVM (tiny initrd, `harness.probe`).

        The answer is cached per host kernel, QEMU and guest kernel: on
        hosts whose /dev/kvm cannot run a stock Debian kernel (kvm_pvm: "KVM
        internal error. Suberror: 1") the VM hangs instead of failing, so a
        probe is the only reliable test.
        """
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False
        qemu = run(["qemu-system-x86_64", "--version"], "qemu --version").stdout.split("\n")[0]
        key = f"{os.uname().release}|{qemu}|{os.path.basename(self.kernel)}"
        cache = os.path.join(rootfs.CACHE_DIR, "kvm-probe.json")
        try:
            with open(cache) as f:
                known = json.load(f)
        except (OSError, ValueError):
            known = {}
        if key in known:
            return known[key]
        self.log.info("qemu: probing KVM with a test boot (once per host)")
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-accel", "kvm",
             "-cpu", "host", "-m", "256", "-no-reboot", "-kernel", self.kernel,
             "-initrd", self.initrd, "-append", "console=ttyS0 panic=-1 harness.probe",
             "-serial", "stdio"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.state.add("proc", proc.pid)
        ok, seen = False, b""
        deadline = time.monotonic() + 30
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and proc.poll() is None:
            chunk = proc.stdout.read() or b""
            seen += chunk
            if b"harness-probe-ok" in seen:
                ok = True
                break
            if b"KVM internal error" in seen or b"failed to initialize kvm" in seen.lower():
                break
            time.sleep(0.1)
        self.state.release("proc", proc.pid)
        proc.wait()
        known[key] = ok
        with open(cache, "w") as f:
            json.dump(known, f, indent=1)
        self.log.info(f"qemu: KVM {'works' if ok else 'does not work'} here "
                      f"(cached in {cache})")
        return ok

    def accel_args(self):
        if self.accel == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]


class QemuMachine(Machine):
    backend = "qemu"

    def __init__(self, name, workdir, logger, out_dir, shared_dir, state, image, root,
                 address, index, memory=1024, cpus=1):
        super().__init__(name, workdir, logger, out_dir, shared_dir)
        self.state, self.image, self.root = state, image, root
        self.address, self.index = address, index
        self.memory, self.cpus = memory, cpus
        self.disk = os.path.join(workdir, "disk.raw")
        self.shell_path = os.path.join(workdir, "shell.sock")
        self.monitor_path = os.path.join(workdir, "monitor.sock")
        self.mac = f"52:54:00:12:01:{index + 1:02x}"
        self.process = None
        self.shell = None
        self.shell_file = None
        self.connected = False
        self.boots = 0

    # -- disk -------------------------------------------------------------------
    def add_vm_files(self):
        """VM-only files into the tree (before provision.seal)."""
        r = self.root
        install_file(r, os.path.join(HARNESS_FILES, "harness-backdoor"),
              "/usr/local/lib/harness/harness-backdoor", 0o755)
        install_file(r, os.path.join(HARNESS_FILES, "harness-backdoor.service"),
              "/etc/systemd/system/harness-backdoor.service", 0o644)
        write_file(r, "/etc/systemd/system/harness-lan.service", LAN_UNIT.format(
            address=self.address, prefix=netlab.SUBNET.prefixlen))
        write_file(r, "/etc/fstab",
               "# vm-tests harness: the driver's shared directory (9p)\n"
               "shared /tmp/shared 9p trans=virtio,version=9p2000.L,msize=524288,"
               "cache=none,nofail 0 0\n")
        os.makedirs(os.path.join(r, "tmp/shared"), exist_ok=True)
        enable_units(r, ["harness-backdoor.service", "harness-lan.service"])

    def build_disk(self):
        """The machine's tree into an ext4 image."""
        r = self.root
        start = time.monotonic()
        run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", r, self.disk, DISK_SIZE],
            f"building the disk image of {self.name} failed")
        self.log(f"disk image built in {time.monotonic() - start:.1f} s")

    # -- lifecycle ----------------------------------------------------------------
    def is_up(self):
        return self.process is not None and self.process.poll() is None

    def _qemu_argv(self):
        cmdline = ("root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 panic=-1 "
                   "quiet loglevel=4 mitigations=off systemd.show_status=yes")
        return [
            "qemu-system-x86_64", "-name", self.name, "-nodefaults", "-display", "none",
            *self.image.accel_args(), "-m", str(self.memory), "-smp", str(self.cpus),
            "-no-reboot",
            "-kernel", self.image.kernel, "-initrd", self.image.initrd, "-append", cmdline,
            "-drive", f"file={self.disk},if=virtio,format=raw,cache=unsafe,discard=unmap",
            "-device", "virtio-rng-pci",
            "-chardev", f"file,id=con,path={self.console_path},append=on",
            "-serial", "chardev:con",
            "-chardev", f"socket,id=shell,path={self.shell_path}",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=shell,name=harness-shell",
            "-monitor", f"unix:{self.monitor_path},server=on,wait=off",
            "-netdev", f"socket,id=lan0,mcast={MCAST}:{MCAST_PORT},localaddr=127.0.0.1",
            "-device", f"virtio-net-pci,netdev=lan0,mac={self.mac}",
            "-virtfs", f"local,path={self.shared_dir},mount_tag=shared,"
                       "security_model=none,id=shared",
        ]

    def _start(self):
        self._reap()
        self.boots += 1
        with open(self.console_path, "a") as f:
            f.write(f"\n===== harness: boot {self.boots} of {self.name} =====\n")
        for p in (self.shell_path, self.monitor_path):
            if os.path.exists(p):
                os.unlink(p)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.shell_path)
        listener.listen(1)
        listener.settimeout(0.2)
        argv = ["ip", "netns", "exec", netlab.lab_ns(self.state.slot), *self._qemu_argv()]
        stderr = open(os.path.join(self.workdir, "qemu.stderr"), "a")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                        stdout=stderr, stderr=stderr,
                                        start_new_session=True)
        stderr.close()
        self.state.add("proc", self.process.pid, machine=self.name)
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    self.shell, _ = listener.accept()
                    break
                except socket.timeout:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise MachineError(
                            f"{self.name}: QEMU did not connect its shell socket "
                            f"(exit status {self.process.poll()}): "
                            f"{self._qemu_stderr()}") from None
        finally:
            listener.close()
        self.shell_file = self.shell.makefile("rb")
        self.connected = False
        if self.blocked:
            self._set_link(False)

    def _qemu_stderr(self):
        try:
            return open(os.path.join(self.workdir, "qemu.stderr")).read()[-2000:]
        except OSError:
            return ""

    def connect(self):
        if self.connected:
            return
        with self.nested("waiting for the VM to boot (backdoor shell)"):
            start = time.monotonic()
            self.shell.settimeout(BOOT_TIMEOUT)
            try:
                while True:
                    line = self.shell_file.readline()
                    if not line:
                        raise MachineError(
                            f"{self.name}: VM shell closed while booting (QEMU "
                            f"{'exited ' + str(self.process.poll()) if not self.is_up() else 'running'}"
                            f"); console:\n{self._console_tail()}\n{self._qemu_stderr()}")
                    if line.strip() == b"harness-backdoor-ready":
                        break
            except socket.timeout:
                raise MachineError(f"{self.name}: no backdoor shell after {BOOT_TIMEOUT} s; "
                                   f"console:\n{self._console_tail()}") from None
            self.connected = True
            self.log(f"backdoor shell up after {time.monotonic() - start:.1f} s")

    def _console_tail(self, n=40):
        return "\n".join(self.get_console_log().splitlines()[-n:])

    def _request(self, mode, command, timeout):
        marker = uuid.uuid4().hex
        b64 = base64.b64encode(command.encode()).decode()
        self.shell.settimeout(None if timeout is None else timeout + 60)
        try:
            self.shell.sendall(f"{marker} {mode} {b64}\n".encode())
            while True:
                line = self.shell_file.readline()
                if not line:
                    raise MachineError(f"{self.name}: VM shell disconnected "
                                       f"(QEMU {'running' if self.is_up() else 'exited'})")
                head = line.decode(errors="replace").split()
                if len(head) == 2 and head[0] == marker:
                    status = int(head[1])
                    out = base64.b64decode(self.shell_file.readline().strip() or b"")
                    err = base64.b64decode(self.shell_file.readline().strip() or b"")
                    return Result(status, out.decode(errors="replace"),
                                  err.decode(errors="replace"))
        except socket.timeout:
            raise MachineError(f"{self.name}: no answer from the VM shell within "
                               f"{timeout + 60} s") from None

    def _exec(self, shell_command, timeout):
        return self._request("wait", shell_command, timeout)

    def _spawn(self, command):
        self._request("spawn", command, 60)

    def _shutdown(self):
        self.connect()
        self._request("spawn", "systemctl poweroff", 60)
        self._wait_for_shutdown(timeout=300)

    def _wait_for_shutdown(self, timeout=None):
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log(f"did not power off within {timeout} s: killing it")
            self._crash()
        self._reap()

    def _crash(self):
        kill_pid(self.process.pid)
        self.process.wait(timeout=30)
        self._reap()

    def _reap(self):
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            self.state.remove("proc", self.process.pid)
        for f in (self.shell_file, self.shell):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self.process = self.shell = self.shell_file = None
        self.connected = False

    def _monitor(self, command):
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.monitor_path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise MachineError(f"{self.name}: cannot reach the QEMU monitor") from None
                time.sleep(0.1)
        with s:
            s.settimeout(10)
            buf = b""
            while not buf.endswith(b"(qemu) "):
                buf += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"(qemu) "):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace")

    def _set_link(self, up):
        if self.is_up():
            self._monitor(f"set_link lan0 {'on' if up else 'off'}")

    # -- results --------------------------------------------------------------------
    def collect_logs(self, dest):
        os.makedirs(dest, exist_ok=True)
        journal = os.path.join(dest, f"{self.name}.journal.log")
        text = None
        if self.is_up() and self.connected:
            try:
                r = self._exec("journalctl -b --no-pager -o short-precise", 120)
                text = r.stdout
            except MachineError as e:
                text = f"[journal over the backdoor failed: {e}]\n"
        if text is None or not text.strip():
            text = (text or "") + self._journal_from_disk()
        with open(journal, "w") as f:
            f.write(text)
        with open(os.path.join(dest, f"{self.name}.console.log"), "w") as f:
            f.write(self.get_console_log())
        stderr = os.path.join(self.workdir, "qemu.stderr")
        if os.path.exists(stderr) and os.path.getsize(stderr):
            shutil.copy(stderr, os.path.join(dest, f"{self.name}.qemu-stderr.log"))

    def _journal_from_disk(self):
        """Read the whole journal out of the (stopped) VM's disk image."""
        if not os.path.exists(self.disk):
            return "[no disk image]\n"
        tmp = os.path.join(self.workdir, "journal-dump")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        subprocess.run(["debugfs", "-R", f"rdump /var/log/journal {tmp}", self.disk],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = subprocess.run(["journalctl", "-D", os.path.join(tmp, "journal"),
                               "--no-pager", "-o", "short-precise"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return "[machine down: whole journal read from its disk image]\n" + proc.stdout

    def release(self):
        if self.process is None:
            return
        if self.is_up():
            self._crash()
        self._reap()


LAN_UNIT = """\
# vm-tests harness (qemu backend): this machine's LAN address.
[Unit]
Description=vm-tests harness LAN address
DefaultDependencies=no
Wants=network.target
Before=network.target network-online.target
After=sys-subsystem-net-devices-eth0.device
BindsTo=sys-subsystem-net-devices-eth0.device

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link set lo up
ExecStart=/sbin/ip addr replace {address}/{prefix} dev eth0
ExecStart=/sbin/ip link set eth0 up

[Install]
WantedBy=sys-subsystem-net-devices-eth0.device multi-user.target
"""
