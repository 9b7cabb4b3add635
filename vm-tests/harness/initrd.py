"""A tiny initramfs for the qemu backend: load virtio + ext4, mount, switch.

Debian's initrd (initramfs-tools, MODULES=most, udev) spends 10-20 s under
TCG between "Run /init" and mounting the root disk.  All a harness VM needs
is the virtio-blk disk with ext4 on it, so this one holds a static busybox,
the nine modules involved (with their dependencies, in order, from the
kernel's modules.dep) and a /init script of a dozen lines.  With
`harness.probe` on the kernel command line it only prints
"harness-probe-ok" and powers off: qemu.py boots that to test whether KVM
works on this host.  It is written as
a newc cpio archive here, no tools needed, and cached next to the rootfs.
"""

import gzip
import io
import os
import stat

# Bump when INIT or the module list changes (it is part of the cache name).
VERSION = 2

# Load order matters: ext4 asks the crypto API for crc32c at mount time, and
# with no modprobe in this initrd a missing crc32c makes the mount fail.
ROOT_MODULES = ["crc32c_generic", "virtio_pci", "virtio_blk", "ext4"]

INIT = """#!/bin/busybox sh
# vm-tests harness initrd: mount the root disk and hand over to systemd.
B=/bin/busybox
$B mount -t devtmpfs devtmpfs /dev
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
if $B grep -q harness.probe /proc/cmdline; then
  echo harness-probe-ok; $B poweroff -f
fi
for m in $($B cat /modules.order); do $B insmod "/lib/modules/$m" 2>/dev/null; done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 600 ]; do $B sleep 0.05; n=$((n+1)); done
if ! $B mount -t ext4 -o rw /dev/vda /root; then
  echo "harness initrd: cannot mount /dev/vda as ext4; modules:"; $B cat /proc/modules
  exec $B sh
fi
$B umount /proc /sys
$B mount --move /dev /root/dev
exec $B switch_root /root /sbin/init "$@"
"""


def _modules_in_order(moddir, names):
    """Paths (relative to moddir) of `names` and their deps, deps first."""
    deps = {}
    with open(os.path.join(moddir, "modules.dep"), encoding="utf-8") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
    by_name = {os.path.basename(p).split(".ko")[0].replace("-", "_"): p for p in deps}
    order = []

    def visit(path):
        # modules.dep lists all (transitive) deps, the deepest last
        for d in reversed(deps.get(path, [])):
            visit(d)
        if path not in order:
            order.append(path)

    for n in names:
        if n not in by_name:
            raise FileNotFoundError(f"module {n} not in {moddir}/modules.dep")
        visit(by_name[n])
    return order


class _Cpio:
    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
            len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, perm=0o644):
        self._entry(name, stat.S_IFREG | perm, data)

    def chardev(self, name, major, minor):
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build(tree, kernel_version, busybox, dest):
    """Write the initrd for `kernel_version` of rootfs `tree` to `dest`."""
    moddir = os.path.join(tree, "lib", "modules", kernel_version)
    mods = _modules_in_order(moddir, ROOT_MODULES)
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "root", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    names = []
    for rel in mods:
        name = os.path.basename(rel)
        with open(os.path.join(moddir, rel), "rb") as f:
            c.file(f"lib/modules/{name}", f.read())
        names.append(name)
    c.file("modules.order", ("\n".join(names) + "\n").encode())
    c.file("init", INIT.encode(), 0o755)
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(c.finish(), compresslevel=6))
    os.replace(tmp, dest)
    return mods
