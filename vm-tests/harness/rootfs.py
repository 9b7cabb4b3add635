"""The Debian bookworm root filesystem every machine boots, built once and cached.

`ensure_rootfs()` returns the path of an unpacked tree that machines use as
the read-only lower layer of their overlays.  The tree is built with
debootstrap from the mirror the host's apt uses, post-processed (see
`_finish`), and stored as a zstd tarball under /var/cache/erlmcp-ci/.  The
cache key is a hash of everything that decides the content: suite, variant,
package list and the post-processing recipe version, so changing any of them
builds a new rootfs and leaves the old one alone.  Next to the tarball the
unpacked tree is kept (marked complete by a `.ok` file beside it) so a cached
run does not even unpack.
"""

import hashlib
import json
import os
import shutil
import time

from . import host
from .util import remove_tree, run, umount_under

CACHE_DIR = os.environ.get("CI_ERLMCP_CACHE", "/var/cache/erlmcp-ci")
SUITE = "bookworm"
VARIANT = "minbase"

# What every machine needs.  The brief's list, plus:
#   python3         the full standard library (python3-minimal has no
#                   http.server; the self-test serves with it)
#   netcat-openbsd  `nc -z`, which wait_for_open_port uses as under NixOS
#   iputils-ping, jq  small tools scenarios commonly want
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "iproute2", "sqlite3", "curl",
    "keepalived", "ca-certificates", "procps", "python3-minimal", "python3",
    "netcat-openbsd", "iputils-ping", "jq",
]
# What the qemu backend needs on top: a kernel and its modules, udev.
# (initramfs-tools comes as a dependency of the kernel; Debian's initrd is
# not generated, the VMs boot the harness's own, see initrd.py.)
KERNEL_PACKAGES = ["linux-image-amd64", "udev", "kmod"]

# Bump when _build() or _finish() changes what ends up in the tree.
RECIPE_VERSION = 4

# Services Debian enables when their package is installed, which a NixOS
# machine runs only when its configuration enables them: a story that wants
# one enables it (keepalived: "units": ["harness/files/keepalived-boot-delay.timer"],
# as nixpkgs' keepalived module starts it).
DISABLED_UNITS = ["keepalived.service"]

# Units masked in every machine: periodic jobs that only add noise and load.
MASKED_UNITS = [
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
    "systemd-timesyncd.service",
]


def package_list():
    return sorted(set(PACKAGES + KERNEL_PACKAGES))


def cache_key():
    spec = {"suite": SUITE, "variant": VARIANT, "packages": package_list(),
            "recipe": RECIPE_VERSION}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def paths():
    base = os.path.join(CACHE_DIR, f"rootfs-{SUITE}-{cache_key()}")
    return {"tarball": base + ".tar.zst", "tree": base, "ok": base + ".ok",
            "build": base + ".build"}


def ensure_rootfs(log, state=None):
    """Return the unpacked, cached rootfs tree, building it if needed."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    p = paths()
    if os.path.exists(p["ok"]) and os.path.isdir(p["tree"]):
        log.info(f"rootfs: cached tree {p['tree']}")
        return p["tree"]
    if os.path.exists(p["tarball"]):
        _unpack(log, p)
        return p["tree"]
    _build(log, p, state)
    return p["tree"]


def _unpack(log, p):
    start = time.monotonic()
    log.info(f"rootfs: unpacking {p['tarball']}")
    remove_tree(p["tree"])
    os.makedirs(p["tree"])
    run(["sh", "-c", 'zstd -dc "$1" | tar --numeric-owner --xattrs --xattrs-include="*" '
         '--acls -xpf - -C "$2"', "unpack", p["tarball"], p["tree"]],
        "unpacking the cached rootfs failed")
    open(p["ok"], "w").close()
    log.info(f"rootfs: unpacked in {time.monotonic() - start:.1f} s")


def _build(log, p, state):
    start = time.monotonic()
    mirror = os.environ.get("CI_ERLMCP_MIRROR") or host.debian_mirror(SUITE)
    build = p["build"]
    if state is not None:
        state.add("tree", build)  # a killed build leaves mounts (proc, sys)
    remove_tree(build)
    os.makedirs(build)
    log.info(f"rootfs: debootstrap {SUITE} ({VARIANT}) from {mirror} into {build}")
    log.info(f"rootfs: packages {' '.join(package_list())}")
    # Two stages so that the slow one runs with dpkg's unsafe-io (no fsync per
    # file: this tree is a cache, rebuilt rather than repaired) and without
    # generating Debian's initramfs (INITRD=No: the VMs boot initrd.py's).
    what = ("debootstrap failed (see the output above and "
            f"{build}/debootstrap/debootstrap.log)")
    try:
        run(["debootstrap", "--foreign", f"--variant={VARIANT}", "--components=main",
             f"--include={','.join(package_list())}", SUITE, build, mirror],
            what, timeout=1800)
        log.info(f"rootfs: first stage (download, unpack) done in "
                 f"{time.monotonic() - start:.1f} s")
        unsafe = os.path.join(build, "etc/dpkg/dpkg.cfg.d/harness-unsafe-io")
        with open(unsafe, "w") as f:
            f.write("force-unsafe-io\n")
        env = dict(os.environ, INITRD="No", DEBIAN_FRONTEND="noninteractive",
                   LANG="C.UTF-8", LC_ALL="C.UTF-8")
        env.pop("LANGUAGE", None)
        run(["chroot", build, "/debootstrap/debootstrap", "--second-stage"], what,
            timeout=1800, env=env)
        _systemd_from_backports(log, build, mirror, env)
        os.unlink(unsafe)
    finally:
        umount_under(build)
    log.info(f"rootfs: debootstrap done in {time.monotonic() - start:.1f} s")
    _finish(build)
    log.info("rootfs: packing the cache tarball")
    tmp = p["tarball"] + ".tmp"
    run(["sh", "-c", 'tar --numeric-owner --xattrs --xattrs-include="*" --acls -C "$1" '
         '-cf - . | zstd -T0 -q -3 -f -o "$2"', "pack", build, tmp],
        "packing the rootfs tarball failed")
    os.replace(tmp, p["tarball"])
    remove_tree(p["tree"])
    os.rename(build, p["tree"])
    if state is not None:
        state.remove("tree", build)
    open(p["ok"], "w").close()
    size = os.path.getsize(p["tarball"]) / 1e6
    log.info(f"rootfs: built and cached ({size:.0f} MB tarball) in "
             f"{time.monotonic() - start:.1f} s")


# erlmcp's unit is Type=notify-reload, which systemd knows since 253;
# bookworm ships 252 and bookworm-backports 254.
BACKPORTED = ["systemd", "systemd-sysv", "libsystemd0", "libsystemd-shared",
              "libpam-systemd", "udev", "libudev1"]


def _systemd_from_backports(log, build, mirror, env):
    log.info(f"rootfs: systemd from {SUITE}-backports ({', '.join(BACKPORTED)})")
    with open(os.path.join(build, "etc/apt/sources.list.d/backports.list"), "w") as f:
        f.write(f"deb {mirror} {SUITE}-backports main\n")
    for d in ("proc", "sys", "dev"):
        run(["mount", "--bind", f"/{d}", os.path.join(build, d)], f"mounting /{d} in the rootfs")
    try:
        run(["chroot", build, "apt-get", "-q", "update"], "apt-get update in the rootfs",
            timeout=600, env=env)
        run(["chroot", build, "apt-get", "-q", "-y", "install", "-t", f"{SUITE}-backports",
             *BACKPORTED], "installing systemd from backports in the rootfs",
            timeout=1200, env=env)
    finally:
        umount_under(build)


def _finish(root):
    """Post-process a fresh debootstrap tree (recipe RECIPE_VERSION)."""
    def at(rel):
        return os.path.join(root, rel.lstrip("/"))

    # smaller tree: no package archives or lists (machines never run apt)
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for name in os.listdir(at(d)):
            path = os.path.join(at(d), name)
            if os.path.isfile(path) and name not in ("lock",):
                os.unlink(path)
    shutil.rmtree(at("debootstrap"), ignore_errors=True)
    # persistent journal: readable from the host after a crash
    os.makedirs(at("var/log/journal"), exist_ok=True)
    # identity is per machine (written by provision.py)
    for rel in ("etc/hostname", "etc/machine-id", "var/lib/dbus/machine-id"):
        if os.path.lexists(at(rel)):
            os.unlink(at(rel))
    open(at("etc/machine-id"), "w").close()
    # root without password: console login for debugging a kept machine
    run(["chroot", root, "passwd", "-d", "root"], "passwd -d root in rootfs")
    run(["systemctl", f"--root={root}", "disable", *DISABLED_UNITS],
        "disabling Debian's default services in the rootfs")
    for unit in MASKED_UNITS:
        link = at(f"etc/systemd/system/{unit}")
        if not os.path.lexists(link):
            os.symlink("/dev/null", link)
    os.makedirs(at("etc/systemd/journald.conf.d"), exist_ok=True)
    with open(at("etc/systemd/journald.conf.d/harness.conf"), "w") as f:
        f.write("[Journal]\nStorage=persistent\nRateLimitBurst=0\n")
