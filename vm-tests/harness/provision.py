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
          "memory": 1024, "cpus": 1            # qemu backend
        },
        "client": {}
      }
    }

Paths in "units" and "files" are relative to vm-tests/.  A machine with
"erlmcp": true gets, in its own overlay:

* the erlmcp binary at /usr/bin/erlmcp,
* every unit in dist/systemd/ at /usr/lib/systemd/system/ (enabled, as a
  Debian package would install them), dist/sysusers.d/*.conf and
  dist/tmpfiles.d/*.conf when they exist,
* /etc/erlmcp/erlmcp.toml rendered from `role_config(role, config)`.

Every machine gets its name in /etc/hostname, a fresh /etc/machine-id, and
/etc/hosts mapping all machines' names to their LAN addresses.
"""

import glob
import json
import os
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
# for MCP on the LAN and accepts its own name and address as Host; stories
# extend or override with "config" in their machines.json (e.g. a virtual
# IP in http.allowed_hosts).  The ops listener (9718) and replication keys
# join BASE_CONFIG / ROLE_CONFIG when erlmcp's config grows them.
BASE_CONFIG = {
    "data_dir": "/var/lib/erlmcp",
    "http": {"listen": "0.0.0.0:8080"},
}
ROLE_CONFIG = {
    "server": {},
    "primary": {},
    "standby": {},
}

KNOWN_KEYS = {"erlmcp", "role", "config", "units", "files", "memory", "cpus"}


def role_config(role, overrides=None, node_name=None, address=None):
    """The config dict of `role`: BASE_CONFIG + ROLE_CONFIG[role] + this
    node's name and LAN address + the story's overrides."""
    cfg = tomlgen.merge(BASE_CONFIG, ROLE_CONFIG.get(role, {}))
    if node_name:
        hosts = ["localhost", "127.0.0.1", node_name] + ([address] if address else [])
        cfg = tomlgen.merge(cfg, {"node_name": node_name,
                                  "http": {"allowed_hosts": hosts}})
    return tomlgen.merge(cfg, overrides or {})


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
            install_file(root, u, f"/usr/lib/systemd/system/{os.path.basename(u)}", 0o644)
        for kind in ("sysusers.d", "tmpfiles.d"):
            for conf in glob.glob(os.path.join(dist_dir(), kind, "*.conf")):
                install_file(root, conf, f"/usr/lib/{kind}/{os.path.basename(conf)}", 0o644)
        cfg = role_config(spec.get("role", name), spec.get("config"), node_name=name,
                          address=netlab.addresses(all_names)[name])
        write_file(root, CONFIG_PATH, tomlgen.dumps(cfg))
        enable_units(root, [os.path.basename(u) for u in units])

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
