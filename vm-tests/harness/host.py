"""Host prerequisites: the tools the harness drives, installed idempotently.

Each backend names the commands it needs; a missing command is installed
with apt-get from the package that ships it.  Two Debian-specific rules:

* `systemd-container` (systemd-nspawn) must match the host's systemd version
  exactly, or apt would upgrade the host's systemd to satisfy it.  We pin it
  to the installed systemd's version and never upgrade systemd.
* QEMU comes from bookworm-backports (qemu-system-x86, -common, -data, and
  seabios, which the backported qemu-system-x86 needs in version >= 1.16.3),
  because plain bookworm's qemu-system-x86 conflicts with the qemu-utils 10
  already installed from backports.  We add a backports source entry (same
  mirror as the host's bookworm entry) if there is none, and select the
  backports version per package (`pkg/bookworm-backports`) so nothing else on
  the host moves.
"""

import glob
import os
import shutil
import subprocess

from .errors import HarnessError

# command -> Debian package providing it
COMMON_TOOLS = {
    "debootstrap": "debootstrap",
    "zstd": "zstd",
    "ip": "iproute2",
    "script": "bsdutils",
    "nsenter": "util-linux",
    "mount": "mount",
    "tar": "tar",
}
NSPAWN_TOOLS = {"systemd-nspawn": "systemd-container"}
QEMU_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "busybox": "busybox-static",  # for the VMs' tiny initrd (initrd.py)
}
QEMU_BACKPORTS = ["qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"]

BACKPORTS_SOURCE = "/etc/apt/sources.list.d/erlmcp-ci-backports.sources"

_apt_updated = False


def _run(cmd, what):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise HarnessError(f"{what}: `{' '.join(cmd)}` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def apt_update(log):
    global _apt_updated
    if not _apt_updated:
        log.info("apt-get update")
        _run(["apt-get", "update", "-q"], "apt-get update failed")
        _apt_updated = True


def installed_version(pkg):
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", pkg],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    parts = proc.stdout.split()
    if proc.returncode == 0 and parts[:3] == ["install", "ok", "installed"]:
        return parts[3]
    return None


def _apt_install(log, specs, missing):
    apt_update(log)
    log.info(f"apt-get install {' '.join(specs)}")
    try:
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *specs],
             f"{', '.join(missing)} not found and apt-get install failed")
    except HarnessError:
        # a stale package list is the usual cause: refresh once and retry
        global _apt_updated
        _apt_updated = False
        apt_update(log)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *specs],
             f"{', '.join(missing)} not found and apt-get install failed")


def ensure_tools(log, tools):
    """Install the packages of every command in `tools` that is missing."""
    missing = {cmd: pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None}
    if not missing:
        return
    specs = []
    for pkg in sorted(set(missing.values())):
        if pkg == "systemd-container":
            # never let apt upgrade the host's systemd to satisfy nspawn
            systemd = installed_version("systemd")
            specs.append(f"{pkg}={systemd}" if systemd else pkg)
        else:
            specs.append(pkg)
    try:
        _apt_install(log, specs, sorted(missing))
    except HarnessError as e:
        if any(s.startswith("systemd-container=") for s in specs):
            raise HarnessError(
                f"{e}\nsystemd-container must have exactly the host's systemd version "
                f"({installed_version('systemd')}) so that apt does not upgrade the "
                "host's systemd; if the archive no longer has it, upgrade systemd "
                "deliberately first") from None
        raise
    still = [cmd for cmd in missing if shutil.which(cmd) is None]
    if still:
        raise HarnessError(f"installed {specs} but still missing: {still}")


# -- Debian mirror ----------------------------------------------------------

def _source_entries():
    """Yield (types, uris, suites, components) for every enabled apt source."""
    files = []
    if os.path.exists("/etc/apt/sources.list"):
        files.append("/etc/apt/sources.list")
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in files:
        try:
            text = open(path, encoding="utf-8").read()
        except OSError:
            continue
        if path.endswith(".list"):
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] in ("deb", "deb-src"):
                    yield [words[0]], [words[1]], [words[2]], words[3:]
        else:
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.split()
                if fields.get("enabled", ["yes"])[0].lower() == "no":
                    continue
                if "uris" in fields and "suites" in fields:
                    yield (fields.get("types", ["deb"]), fields["uris"],
                           fields["suites"], fields.get("components", []))


def debian_mirror(suite="bookworm"):
    """The mirror the host's apt uses for `suite` (main archive, not security)."""
    for types, uris, suites, _ in _source_entries():
        if "deb" in types and suite in suites:
            return uris[0].rstrip("/")
    raise HarnessError(
        f"no apt source for suite {suite!r} in /etc/apt/sources.list*; "
        "set CI_ERLMCP_MIRROR to a Debian mirror URL")


def ensure_backports_source(log, suite="bookworm"):
    backports = f"{suite}-backports"
    for types, _, suites, _ in _source_entries():
        if "deb" in types and backports in suites:
            return
    mirror = os.environ.get("CI_ERLMCP_MIRROR") or debian_mirror(suite)
    log.info(f"adding {backports} apt source ({mirror}) at {BACKPORTS_SOURCE}")
    with open(BACKPORTS_SOURCE, "w", encoding="utf-8") as f:
        f.write(f"# added by erlmcp vm-tests harness for qemu-system-x86\n"
                f"Types: deb\nURIs: {mirror}\nSuites: {backports}\nComponents: main\n"
                f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    global _apt_updated
    _apt_updated = False


def ensure_qemu(log):
    """qemu-system-x86 (+common, +data) from bookworm-backports, exactly."""
    ensure_tools(log, {k: v for k, v in QEMU_TOOLS.items() if k != "qemu-system-x86_64"})
    if shutil.which("qemu-system-x86_64"):
        return
    ensure_backports_source(log)
    specs = [f"{p}/bookworm-backports" for p in QEMU_BACKPORTS]
    _apt_install(log, specs, ["qemu-system-x86_64"])
    if shutil.which("qemu-system-x86_64") is None:
        raise HarnessError("installed qemu-system-x86 but qemu-system-x86_64 is still missing")


def ensure_host(log, backend):
    if os.geteuid() != 0:
        raise HarnessError("the harness needs root (namespaces, mounts, nspawn, apt)")
    ensure_tools(log, COMMON_TOOLS)
    if backend == "nspawn":
        ensure_tools(log, NSPAWN_TOOLS)
    elif backend == "qemu":
        ensure_qemu(log)
