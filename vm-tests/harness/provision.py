"""What a story's machines are, and what goes into each machine's disk.

A story `scenarios/<story>.py` declares its machines in the sibling file
`scenarios/<story>.machines.json` (NixOS tests declare nodes in Nix, so the
script itself stays free of harness code):

    {
      "machines": {
        "server": {
          "erlmcp": true,                      # binary + dist/ units + config
          "role": "server",                    # role defaults (default: the name)
          "config": {"log": {"level": "debug"}},   # merged over the role's config
          "units": ["harness/files/x.service"],    # extra units, enabled
          "files": {"/etc/x.conf": "scenarios/files/x.conf",
                    "/etc/y": {"content": "...", "mode": "0600"}},
          "memory": 1024, "cpus": 1,           # qemu backend
          "releases": true,                    # /opt/erlmcp releases layout
          "prometheus": {"scrape_interval": "2s"}  # Prometheus scraping it
        },
        "client": {}
      }
    }

Paths in "units" and "files" are relative to vm-tests/.  A machine with
"erlmcp": true gets, in its own overlay:

* the erlmcp binary at /usr/bin/erlmcp,
* every unit in dist/systemd/ in /etc/systemd/system/ (enabled; NixOS puts
  the module's units there), dist/sysusers.d/*.conf and dist/tmpfiles.d/*.conf
  in /usr/lib when they exist,
* /etc/erlmcp/erlmcp.toml rendered from `role_config(role, config)`, and one
  more configuration per entry of "specialisations" (see `seal`).

With "releases": true (erlmcp machines) the machine is laid out for
`erlmcp upgrade` as docs/operations/upgrades.md describes a Debian host:
`/opt/erlmcp/releases/<version>/erlmcp` for the binary and for the test
build of the next release (`vm-tests/run --next-binary`), the link
`/opt/erlmcp/current` to the first, /usr/bin/erlmcp through that link, and
the units of dist/systemd/releases/ (the drop-in that runs the link, the
resume unit, enabled) under /etc/systemd/system, sealed with the rest.

With "prometheus" (erlmcp machines) the machine runs Prometheus next to
erlmcp, as a NixOS machine with services.prometheus.enable and
services.erlmcp.prometheus.scrape: Debian's prometheus binary (from the CI
cache, or CI_ERLMCP_PROMETHEUS) at /usr/bin/prometheus, the unit
harness/files/prometheus.service (enabled), erlmcp's rules
(dist/prometheus/erlmcp.rules.yml) and a prometheus.yml that loads them
and scrapes erlmcp's ops listener in the job `erlmcp`; its keys
(scrape_interval, evaluation_interval) are Prometheus' global settings
(the NixOS option services.prometheus.globalConfig).

Every machine gets its name in /etc/hostname, a fresh /etc/machine-id, and
/etc/hosts mapping all machines' names to their LAN addresses.

Then `seal` makes /etc behave as on NixOS, where it is stricter than
Debian: what the configuration declares (/etc/systemd/system, hosts,
hostname, the erlmcp config, every "files" entry under /etc) moves into a
read-only /nix/store and /etc points there through /etc/static, so a story
that edits a module-written file or adds a unit under /etc/systemd/system
fails here as it fails on NixOS.  A story changes configuration the NixOS
way: `/run/booted-system/specialisation/NAME/bin/switch-to-configuration
test`, which both drivers provide.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid

from . import netlab, tomlgen
from .errors import HarnessError

VM_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(VM_TESTS)
HARNESS_FILES = os.path.join(VM_TESTS, "harness", "files")

CONFIG_PATH = "/etc/erlmcp/erlmcp.toml"
BINARY_PATH = "/usr/bin/erlmcp"

# The role configs, in the schema of src/config.rs on main (unknown keys are
# rejected there, so only keys that exist go here).  Every machine listens
# for MCP and operations on the LAN (as vm-tests/common.nix's erlmcpNode:
# listenAddress and ops.listenAddress 0.0.0.0) and accepts its own name and
# address as Host; stories extend or override with "config" in their
# machines.json (e.g. a virtual IP in http.allowed_hosts).  The roles
# `primary` and `standby` are a replication pair (the NixOS module's
# replication.role), each naming the other machine's ops listener as its
# peer; the shared secret is the story's (a systemd credential).
OPS_PORT = 9718
BASE_CONFIG = {
    "data_dir": "/var/lib/erlmcp",
    "http": {"listen": "0.0.0.0:8080"},
    "ops": {"listen": f"0.0.0.0:{OPS_PORT}"},
}
ROLE_CONFIG = {
    "server": {},
    "primary": {"replication": {"enabled": True, "initial_role": "primary"}},
    "standby": {"replication": {"enabled": True, "initial_role": "standby"}},
}
PEER_ROLE = {"primary": "standby", "standby": "primary"}

# Settings erlmcp applies only when it starts (src/node/reload.rs keeps
# them on SIGHUP).  The NixOS module makes them erlmcp.service's
# restartTriggers, so a configuration switch that changes them restarts
# erlmcp instead of reloading it; the harness's switch-to-configuration
# does the same.
RESTART_KEYS = ("data_dir", "store", "replication", "ops", "http.listen")

KNOWN_KEYS = {"erlmcp", "role", "config", "units", "files", "memory", "cpus", "specialisations",
              "releases", "prometheus"}
PROMETHEUS_KEYS = {"scrape_interval", "evaluation_interval"}
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_RULES = "/etc/prometheus/erlmcp.rules.yml"

# The releases layout of docs/operations/upgrades.md (the [upgrade] defaults).
RELEASES_DIR = "/opt/erlmcp/releases"
CURRENT_LINK = "/opt/erlmcp/current"
SPECIALISATION_KEYS = {"config", "validateConfig"}


def role_config(role, overrides=None, node_name=None, address=None, names=()):
    """The config dict of `role`: BASE_CONFIG + ROLE_CONFIG[role] + this
    node's name and LAN address + its replication peer (the machine named
    after the other role, when the story has one) + the story's overrides."""
    cfg = tomlgen.merge(BASE_CONFIG, ROLE_CONFIG.get(role, {}))
    if node_name:
        hosts = ["localhost", "127.0.0.1", node_name] + ([address] if address else [])
        cfg = tomlgen.merge(cfg, {"node_name": node_name,
                                  "http": {"allowed_hosts": hosts}})
    if PEER_ROLE.get(role) in names:
        cfg = tomlgen.merge(cfg, {"replication": {"peer": f"{PEER_ROLE[role]}:{OPS_PORT}"}})
    return tomlgen.merge(cfg, overrides or {})


def restart_triggers(cfg):
    """The part of a config that only a restart applies (RESTART_KEYS)."""
    picked = {}
    for key in RESTART_KEYS:
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        picked[key] = value
    return json.dumps(picked, sort_keys=True)


def socket_dropins(cfg):
    """{path: text}: erlmcp.socket and erlmcp-ops.socket listen where the
    config says, as the NixOS module's sockets follow listenAddress/port and
    ops.listenAddress/ops.port."""
    out = {}
    for unit, listen in (("erlmcp.socket", cfg.get("http", {}).get("listen")),
                         ("erlmcp-ops.socket", cfg.get("ops", {}).get("listen"))):
        if listen:
            out[f"/etc/systemd/system/{unit}.d/listen.conf"] = (
                "# vm-tests harness: where the machine's erlmcp.toml listens, as the\n"
                "# NixOS module's socket units follow its listen options.\n"
                f"[Socket]\nListenStream=\nListenStream={listen}\n")
    return out


def copied(src):
    """A "files" entry with an explicit mode is copied into /etc as a
    regular file with that mode, as NixOS does with environment.etc.<name>.mode
    (a secret the service reads with LoadCredential=); others are links into
    the read-only store."""
    return isinstance(src, dict) and "mode" in src


def story_paths(story):
    """(script path, machines.json path) of a story name or script path."""
    if story.endswith(".py") or os.sep in story:
        script = os.path.abspath(story)
    else:
        script = os.path.join(VM_TESTS, "scenarios", f"{story}.py")
    if not os.path.isfile(script):
        raise HarnessError(f"no scenario script {script}")
    return script, script[:-3] + ".machines.json"


def load_machines(story):
    """{name: spec} from the story's machines.json (validated)."""
    _, decl = story_paths(story)
    if not os.path.isfile(decl):
        raise HarnessError(f"{decl} is missing: every story declares its machines there "
                           '(e.g. {"machines": {"server": {}, "client": {}}})')
    try:
        with open(decl, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise HarnessError(f"{decl}: invalid JSON: {e}") from None
    machines = data.get("machines")
    if not isinstance(machines, dict) or not machines:
        raise HarnessError(f'{decl}: needs a non-empty "machines" object')
    for name, spec in machines.items():
        if not name.isidentifier() or len(name) > 11:
            raise HarnessError(f"{decl}: machine name {name!r} must be a Python identifier "
                               "of at most 11 characters (it becomes a global and an "
                               "interface name)")
        unknown = set(spec) - KNOWN_KEYS
        if unknown:
            raise HarnessError(f"{decl}: machine {name}: unknown keys {sorted(unknown)} "
                               f"(known: {sorted(KNOWN_KEYS)})")
        if spec.get("releases") and not spec.get("erlmcp"):
            raise HarnessError(f"{decl}: machine {name}: \"releases\" lays out erlmcp's "
                               'releases, so it needs "erlmcp": true')
        prom = spec.get("prometheus")
        if prom is not None:
            if not isinstance(prom, dict) or set(prom) - PROMETHEUS_KEYS:
                raise HarnessError(f'{decl}: machine {name}: "prometheus" is an object with keys '
                                   f"from {sorted(PROMETHEUS_KEYS)}")
            if not spec.get("erlmcp"):
                raise HarnessError(f'{decl}: machine {name}: "prometheus" scrapes the '
                                   'machine\'s erlmcp, so it needs "erlmcp": true')
        specs = spec.get("specialisations", {})
        if specs and not spec.get("erlmcp"):
            raise HarnessError(f"{decl}: machine {name}: specialisations change erlmcp's "
                               'settings, so they need "erlmcp": true')
        for sname, sspec in specs.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", sname) or not isinstance(sspec, dict):
                raise HarnessError(f"{decl}: machine {name}: specialisation {sname!r} must be a "
                                   'name of letters, digits, - and _ with an object '
                                   '{"config": {...}, "validateConfig": false}')
            extra = set(sspec) - SPECIALISATION_KEYS
            if extra:
                raise HarnessError(f"{decl}: machine {name}: specialisation {sname}: unknown keys "
                                   f"{sorted(extra)} (known: {sorted(SPECIALISATION_KEYS)}; the "
                                   "harness switches erlmcp's settings, nothing else)")
    return machines


def load_prelude(story):
    """Helper scripts (in scenarios/) the story's machines.json lists under
    "prelude", run before the story under both drivers."""
    _, decl = story_paths(story)
    with open(decl, encoding="utf-8") as f:
        prelude = json.load(f).get("prelude", [])
    if not isinstance(prelude, list) or not all(isinstance(p, str) for p in prelude):
        raise HarnessError(f'{decl}: "prelude" must be a list of file names in scenarios/')
    for name in prelude:
        if not os.path.isfile(os.path.join(os.path.dirname(decl), name)):
            raise HarnessError(f"{decl}: prelude {name} does not exist next to it")
    return prelude


def script_source(story):
    """The story's test script: its prelude files, each followed by a
    newline, then the story. vm-tests/test-script.nix builds the same text
    for the NixOS test, and tests/driver-lint checks that the two agree."""
    script, _ = story_paths(story)
    source = ""
    for name in load_prelude(story):
        with open(os.path.join(os.path.dirname(script), name), encoding="utf-8") as f:
            source += f.read() + "\n"
    with open(script, encoding="utf-8") as f:
        return source + f.read()


def needs_erlmcp(machines):
    return any(spec.get("erlmcp") for spec in machines.values())


def needs_next_release(machines):
    return any(spec.get("releases") for spec in machines.values())


def next_binary():
    """The test build of the next release (`vm-tests/run --next-binary`,
    which sets CI_ERLMCP_NEXT_BINARY so that concurrent runs inherit it)."""
    return os.environ.get("CI_ERLMCP_NEXT_BINARY")


def release_of(binary):
    """The release a binary is (`erlmcp --version`: "erlmcp 0.1.0")."""
    r = subprocess.run([binary, "--version"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    words = r.stdout.split()
    if r.returncode != 0 or len(words) < 2:
        raise HarnessError(f"{binary} --version failed: {r.stdout.strip()}")
    return words[1]


def install_releases(root, name, binary, next_bin):
    """The releases layout: both releases side by side, the `current` link
    to `binary`'s, the service run through the link, the resume unit."""
    if not next_bin or not os.path.isfile(next_bin):
        raise HarnessError(f"machine {name} has \"releases\": it needs the next release's "
                           f"binary (vm-tests/run --next-binary PATH), none at {next_bin!r}")
    current, upcoming = release_of(binary), release_of(next_bin)
    if current == upcoming:
        raise HarnessError(f"machine {name}: {binary} and {next_bin} are both release "
                           f"{current}; --next-binary must be the next-release build")
    for release, src in ((current, binary), (upcoming, next_bin)):
        install_file(root, src, f"{RELEASES_DIR}/{release}/erlmcp", 0o755)
    # Absolute, as `erlmcp upgrade apply` writes it.
    _symlink(root, CURRENT_LINK, f"{RELEASES_DIR}/{current}")
    _symlink(root, BINARY_PATH, f"{CURRENT_LINK}/erlmcp")
    d = os.path.join(dist_dir(), "systemd", "releases")
    install_file(root, os.path.join(d, "erlmcp.service.d-releases.conf"),
                 "/etc/systemd/system/erlmcp.service.d/releases.conf", 0o644)
    install_file(root, os.path.join(d, "erlmcp-upgrade-resume.service"),
                 "/etc/systemd/system/erlmcp-upgrade-resume.service", 0o644)
    enable_units(root, ["erlmcp-upgrade-resume.service"])


def prometheus_binary():
    """Debian's prometheus server, as tests/lib/prereqs.sh unpacks it."""
    cache = os.environ.get("CI_ERLMCP_CACHE", "/var/cache/erlmcp-ci")
    path = os.environ.get("CI_ERLMCP_PROMETHEUS") or os.path.join(
        cache, "prometheus", "usr", "bin", "prometheus")
    if not os.path.isfile(path):
        raise HarnessError(f"no Prometheus server at {path}: `tests/run --only promtool` "
                           "unpacks Debian's prometheus package there (or set "
                           "CI_ERLMCP_PROMETHEUS)")
    return path


def prometheus_config(settings):
    """prometheus.yml as services.erlmcp.prometheus.scrape makes it: the
    rules loaded, erlmcp's ops listener scraped in the job `erlmcp` (at
    127.0.0.1, the module's target for a listener on 0.0.0.0)."""
    lines = ["global:"]
    for key in sorted(settings):
        lines.append(f"  {key}: {settings[key]}")
    if len(lines) == 1:
        lines[0] = "global: {}"
    lines += ["rule_files:", f"  - {PROMETHEUS_RULES}",
              "scrape_configs:", "  - job_name: erlmcp",
              "    static_configs:", f"      - targets: ['127.0.0.1:{OPS_PORT}']", ""]
    return "\n".join(lines)


def install_prometheus(root, settings):
    install_file(root, prometheus_binary(), "/usr/bin/prometheus", 0o755)
    install_file(root, os.path.join(dist_dir(), "prometheus", "erlmcp.rules.yml"),
                 PROMETHEUS_RULES, 0o644)
    write_file(root, PROMETHEUS_CONFIG, prometheus_config(settings))
    install_file(root, os.path.join(HARNESS_FILES, "prometheus.service"),
                 "/etc/systemd/system/prometheus.service", 0o644)
    enable_units(root, ["prometheus.service"])


def write_file(root, path, data, mode=0o644):
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        os.unlink(dest)
    with open(dest, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(dest, mode)


def install_file(root, src, path, mode=None):
    if not os.path.isfile(src):
        raise HarnessError(f"file to install is missing: {src}")
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        os.unlink(dest)
    shutil.copy2(src, dest)
    if mode is not None:
        os.chmod(dest, mode)


def enable_units(root, units):
    if not units:
        return
    proc = subprocess.run(["systemctl", f"--root={root}", "enable", *units],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"systemctl --root enable {' '.join(units)} failed:\n{proc.stdout}")


def dist_dir():
    """dist/ of the repo; CI_ERLMCP_DIST points elsewhere (units under review)."""
    return os.environ.get("CI_ERLMCP_DIST") or os.path.join(REPO, "dist")


def dist_units():
    d = os.path.join(dist_dir(), "systemd")
    return sorted(glob.glob(os.path.join(d, "*.service")) + glob.glob(os.path.join(d, "*.socket"))
                  + glob.glob(os.path.join(d, "*.timer")))


def provision(root, name, spec, all_names, binary=None):
    """Install one machine's files into its (mounted, writable) root tree."""
    write_file(root, "/etc/hostname", name + "\n")
    write_file(root, "/etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    write_file(root, "/etc/hosts", netlab.hosts_file(all_names))

    if spec.get("erlmcp"):
        if not binary or not os.path.isfile(binary):
            raise HarnessError(f"machine {name} needs the erlmcp binary, none at {binary!r}")
        install_file(root, binary, BINARY_PATH, 0o755)
        units = dist_units()
        if not any(u.endswith("/erlmcp.service") for u in units):
            raise HarnessError(
                f"{dist_dir()}/systemd/erlmcp.service is missing: machine {name} needs the "
                "erlmcp units (erlmcp.service, erlmcp.socket) from dist/systemd/")
        for u in units:
            install_file(root, u, f"/etc/systemd/system/{os.path.basename(u)}", 0o644)
        for kind in ("sysusers.d", "tmpfiles.d"):
            for conf in glob.glob(os.path.join(dist_dir(), kind, "*.conf")):
                install_file(root, conf, f"/usr/lib/{kind}/{os.path.basename(conf)}", 0o644)
        enable_units(root, [os.path.basename(u) for u in units])
        base = configurations(name, spec, all_names)[0][1]
        for path, text in socket_dropins(base).items():
            write_file(root, path, text)
        if spec.get("releases"):
            install_releases(root, name, binary, next_binary())
        if spec.get("prometheus") is not None:
            install_prometheus(root, spec["prometheus"])

    extra = []
    for rel in spec.get("units", []):
        src = os.path.join(VM_TESTS, rel)
        install_file(root, src, f"/etc/systemd/system/{os.path.basename(rel)}", 0o644)
        extra.append(os.path.basename(rel))
    enable_units(root, extra)

    for dest, src in spec.get("files", {}).items():
        if isinstance(src, dict):
            write_file(root, dest, src.get("content", ""), int(str(src.get("mode", "0644")), 8))
        else:
            install_file(root, os.path.join(VM_TESTS, src), dest)


# -- NixOS's /etc ---------------------------------------------------------------

STORE = "/nix/store"

# nixos-modules/erlmcp.nix sets `reloadTriggers = [ configFile ]`: when only
# erlmcp's settings change, switch-to-configuration reloads erlmcp.service
# (SIGHUP) instead of restarting it.  The harness's switch-to-configuration
# does the same.
SWITCH_SCRIPT = """#!/bin/sh
# vm-tests harness: a stand-in for NixOS's switch-to-configuration. It makes
# @TOPLEVEL@ the current configuration (its /etc, /run/current-system; with
# `switch` also the one the next boot activates) and does to erlmcp.service
# what NixOS does when only erlmcp's settings changed: a reload (the
# module's reloadTriggers), or, when settings that only a start applies
# changed (the module's restartTriggers: [replication], ...), a restart the
# way NixOS restarts a socket-activated service: the service and its
# sockets stop, the sockets start again, and the next connection starts
# the service. Configurations here differ in erlmcp's settings only.
set -eu
case "${1:-}" in
  switch|test) ;;
  *) echo "switch-to-configuration (vm-tests harness): only 'switch' and 'test' exist here" >&2
     exit 100 ;;
esac
old=$(readlink -f /etc/erlmcp/erlmcp.toml 2>/dev/null || true)
old_restart=$(cat /run/current-system/erlmcp-restart-triggers 2>/dev/null || true)
@TOPLEVEL@/activate
if [ "$1" = switch ]; then
  ln -sfn @TOPLEVEL@ /nix/var/nix/profiles/system
fi
new=$(readlink -f /etc/erlmcp/erlmcp.toml 2>/dev/null || true)
new_restart=$(cat @TOPLEVEL@/erlmcp-restart-triggers 2>/dev/null || true)
if [ "$old" != "$new" ] && systemctl -q is-active erlmcp.service; then
  if [ "$old_restart" != "$new_restart" ]; then
    echo "stopping the following units: erlmcp-ops.socket, erlmcp.service, erlmcp.socket" >&2
    systemctl stop erlmcp.service erlmcp.socket erlmcp-ops.socket
    echo "starting the following units: erlmcp-ops.socket, erlmcp.socket" >&2
    systemctl start erlmcp.socket erlmcp-ops.socket || exit 4
  else
    echo "reloading the following units: erlmcp.service" >&2
    systemctl reload erlmcp.service || exit 4
  fi
fi
"""

ACTIVATE_SCRIPT = """#!/bin/sh
# vm-tests harness: what NixOS's activation does to /etc: /etc/static is
# this configuration's /etc, and /run/current-system is this configuration.
set -eu
ln -sfn @ETC@ /etc/static.tmp
mv -T /etc/static.tmp /etc/static
ln -sfn @TOPLEVEL@ /run/current-system.tmp
mv -T /run/current-system.tmp /run/current-system
"""

# NixOS activates the configuration it boots (the system profile) before
# any service starts; `test` switches do not survive a reboot.
ACTIVATE_UNIT = """[Unit]
Description=vm-tests harness: activate the boot configuration, as NixOS's stage 2 does
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'sys=$(readlink -f /nix/var/nix/profiles/system) && ln -sfn "$sys" /run/booted-system && exec "$sys/activate"'

[Install]
WantedBy=sysinit.target
"""

# NixOS mounts the store read-only (boot.readOnlyNixStore): even root cannot
# change a file /etc points into it.
STORE_MOUNT_UNIT = """[Unit]
Description=vm-tests harness: the Nix store, read-only as on NixOS
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target

[Mount]
What=/nix/store
Where=/nix/store
Type=none
Options=bind,ro

[Install]
WantedBy=local-fs.target
"""


def _store_path(root, name, *parts):
    """A fresh /nix/store/<hash>-<name> (its path inside the machine)."""
    digest = hashlib.sha256("\0".join([name, *parts]).encode()).hexdigest()[:32]
    path = f"{STORE}/{digest}-{name}"
    host = os.path.join(root, path.lstrip("/"))
    if os.path.lexists(host):
        shutil.rmtree(host) if os.path.isdir(host) and not os.path.islink(host) else os.unlink(host)
    return path, host


def _symlink(root, path, target):
    dest = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        if os.path.isdir(dest) and not os.path.islink(dest):
            shutil.rmtree(dest)
        else:
            os.unlink(dest)
    os.symlink(target, dest)


def _check_config(binary, path, what):
    """`erlmcp check-config`, as the NixOS module runs it when it builds the
    configuration (validateConfig): a config NixOS could not build is not
    booted here either."""
    r = subprocess.run([binary, "check-config", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise HarnessError(f"{what}: erlmcp check-config refuses it, so the NixOS module would "
                           f"not build it (set \"validateConfig\": false in the specialisation "
                           f"to boot it anyway):\n{r.stdout.rstrip()}")


def configurations(name, spec, all_names):
    """[(specialisation or None, config dict, validate)] of an erlmcp machine."""
    base = role_config(spec.get("role", name), spec.get("config"), node_name=name,
                       address=netlab.addresses(all_names)[name], names=all_names)
    out = [(None, base, True)]
    for sname, s in sorted(spec.get("specialisations", {}).items()):
        out.append((sname, tomlgen.merge(base, s.get("config", {})), s.get("validateConfig", True)))
    return out


def seal(root, name, spec, all_names, binary=None):
    """Give the machine NixOS's /etc: the declared files live in a read-only
    /nix/store, /etc links to them through /etc/static, and every
    configuration (the machine's and its specialisations) is a toplevel with
    `activate` and `bin/switch-to-configuration`, the machine's being the
    system profile the boot activates.  Runs after everything else has been
    written into the machine's tree (the links are absolute, as on NixOS, so
    the host must not write through them)."""
    def at(path):
        return os.path.join(root, path.lstrip("/"))

    for path, text in (("/etc/systemd/system/nix-store.mount", STORE_MOUNT_UNIT),
                       ("/etc/systemd/system/harness-activate.service", ACTIVATE_UNIT)):
        write_file(root, path, text)
    enable_units(root, ["nix-store.mount", "harness-activate.service"])
    os.makedirs(at(STORE), exist_ok=True)

    # The machine's own /etc entries, moved into its etc tree.
    declared = ["/etc/systemd/system", "/etc/hosts", "/etc/hostname"]
    if spec.get("prometheus") is not None:
        declared.append("/etc/prometheus")
    declared += sorted(p for p, src in spec.get("files", {}).items()
                       if p.startswith("/etc/") and not p.startswith("/etc/systemd/system/")
                       and not copied(src))
    configs = configurations(name, spec, all_names) if spec.get("erlmcp") else [(None, None, True)]
    systems = {}
    base_etc = None
    for sname, cfg, validate in configs:
        label = name + (f"-{sname}" if sname else "")
        toml = tomlgen.dumps(cfg) if cfg is not None else None
        etc, etc_host = _store_path(root, f"etc-{label}", toml or "")
        etc = etc + "/etc"
        etc_host = os.path.join(etc_host, "etc")
        os.makedirs(etc_host)
        if base_etc is None:
            for path in declared:
                if os.path.lexists(at(path)):
                    dest = os.path.join(etc_host, path[len("/etc/"):])
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    shutil.move(at(path), dest)
            base_etc = etc
        else:
            # A specialisation: the same /etc but for erlmcp's config.
            for entry in os.listdir(at(base_etc)):
                if entry != "erlmcp":
                    os.symlink(f"{base_etc}/{entry}", os.path.join(etc_host, entry))
        if toml is not None:
            conf, conf_host = _store_path(root, "erlmcp.toml", toml)
            with open(conf_host, "w", encoding="utf-8") as f:
                f.write(toml)
            if validate and binary:
                _check_config(binary, conf_host, f"machine {name}" +
                              (f", specialisation {sname}" if sname else "") + " config")
            os.makedirs(os.path.join(etc_host, "erlmcp"), exist_ok=True)
            os.symlink(conf, os.path.join(etc_host, "erlmcp", "erlmcp.toml"))
        top, top_host = _store_path(root, f"nixos-system-{label}", toml or "")
        os.makedirs(os.path.join(top_host, "bin"))
        os.symlink(etc, os.path.join(top_host, "etc"))
        if cfg is not None:
            with open(os.path.join(top_host, "erlmcp-restart-triggers"), "w",
                      encoding="utf-8") as f:
                f.write(restart_triggers(cfg) + "\n")
        for rel, text, mode in (("activate", ACTIVATE_SCRIPT, 0o555),
                                ("bin/switch-to-configuration", SWITCH_SCRIPT, 0o555)):
            with open(os.path.join(top_host, rel), "w", encoding="utf-8") as f:
                f.write(text.replace("@TOPLEVEL@", top).replace("@ETC@", etc))
            os.chmod(os.path.join(top_host, rel), mode)
        systems[sname] = (top, top_host)

    base_top, base_top_host = systems.pop(None)
    os.makedirs(os.path.join(base_top_host, "specialisation"))
    for sname, (top, _) in systems.items():
        os.symlink(top, os.path.join(base_top_host, "specialisation", sname))

    # /etc as NixOS lays it out: links through /etc/static.
    _symlink(root, "/etc/static", base_etc)
    for path in declared:
        if os.path.lexists(at(base_etc + path[len("/etc"):])):
            _symlink(root, path, "/etc/static" + path[len("/etc"):])
    if spec.get("erlmcp"):
        _symlink(root, CONFIG_PATH, "/etc/static/erlmcp/erlmcp.toml")
    _symlink(root, "/nix/var/nix/profiles/system", base_top)

    # Read-only files and directories, as the store has them.
    for dirpath, dirnames, filenames in os.walk(at(STORE)):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o555 if os.access(p, os.X_OK) else 0o444)
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.chmod(os.path.join(dirpath, d), 0o555)
