"""Unit tests of the harness's pure parts (no root, no machines).

    python3 -m unittest discover -s vm-tests/tests -v
"""

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import initrd, netlab, provision, tomlgen  # noqa: E402
from harness.errors import HarnessError, RequestedAssertionFailed  # noqa: E402
from harness.log import Logger  # noqa: E402
from harness.machine import Machine, Result  # noqa: E402


class TomlTest(unittest.TestCase):
    def test_round_trip(self):
        doc = {
            "a": 1, "s": 'quote " and \\ and\nnewline', "f": 0.25, "b": False,
            "list": [1, 2, 3], "strs": ["x", "y"], "weird key": "v",
            "t": {"k": True, "sub": {"deep": "yes"}},
            "arr": [{"n": 1}, {"n": 2, "inner": {"q": "z"}}],
        }
        self.assertEqual(tomllib.loads(tomlgen.dumps(doc)), doc)

    def test_merge_deep_and_delete(self):
        base = {"http": {"listen": "0.0.0.0:8080", "path": "/mcp"}, "x": 1}
        got = tomlgen.merge(base, {"http": {"listen": "127.0.0.1:1"}, "x": None, "y": 2})
        self.assertEqual(got, {"http": {"listen": "127.0.0.1:1", "path": "/mcp"}, "y": 2})
        self.assertEqual(base["http"]["listen"], "0.0.0.0:8080")  # not mutated

    def test_rejects_null_in_list(self):
        with self.assertRaises(TypeError):
            tomlgen.dumps({"a": [None]})

    def test_role_config_renders(self):
        cfg = provision.role_config("standby", {"log": {"level": "debug"}},
                                    node_name="standby", address="192.168.1.3")
        parsed = tomllib.loads(tomlgen.dumps(cfg))
        self.assertEqual(parsed["node_name"], "standby")
        self.assertEqual(parsed["data_dir"], "/var/lib/erlmcp")
        self.assertEqual(parsed["http"]["listen"], "0.0.0.0:8080")
        self.assertIn("192.168.1.3", parsed["http"]["allowed_hosts"])
        self.assertEqual(parsed["log"]["level"], "debug")


    def test_a_pair_names_each_other(self):
        names = ["client", "primary", "standby"]
        p = provision.role_config("primary", node_name="primary", names=names)
        s = provision.role_config("standby", node_name="standby", names=names)
        self.assertEqual(p["replication"], {"enabled": True, "initial_role": "primary",
                                            "peer": "standby:9718"})
        self.assertEqual(s["replication"]["peer"], "primary:9718")
        self.assertEqual(s["replication"]["initial_role"], "standby")
        self.assertEqual(p["ops"]["listen"], "0.0.0.0:9718")
        self.assertNotIn("replication", provision.role_config("server", node_name="server",
                                                              names=["client", "server"]))

    def test_sockets_follow_the_config(self):
        drop = provision.socket_dropins(provision.role_config("server"))
        self.assertIn("ListenStream=\nListenStream=0.0.0.0:8080\n",
                      drop["/etc/systemd/system/erlmcp.socket.d/listen.conf"])
        self.assertIn("ListenStream=\nListenStream=0.0.0.0:9718\n",
                      drop["/etc/systemd/system/erlmcp-ops.socket.d/listen.conf"])

    def test_restart_triggers(self):
        base = provision.role_config("primary", names=["primary", "standby"])
        prompts = tomlgen.merge(base, {"prompts": [{"name": "p", "template": "x"}]})
        degrade = tomlgen.merge(base, {"replication": {"on_standby_loss": "degrade"}})
        self.assertEqual(provision.restart_triggers(base), provision.restart_triggers(prompts))
        self.assertNotEqual(provision.restart_triggers(base), provision.restart_triggers(degrade))

    def test_keepalived_configs_differ_in_priority_only(self):
        # The failover story runs dist/keepalived/keepalived.conf on the
        # primary and this copy on the standby.
        with open(os.path.join(provision.REPO, "dist/keepalived/keepalived.conf")) as f:
            dist = f.read()
        with open(os.path.join(provision.VM_TESTS,
                               "scenarios/files/failover-keepalived-standby.conf")) as f:
            standby = f.read()
        self.assertIn("\n    priority 150\n", dist)
        self.assertEqual(dist.replace("\n    priority 150\n", "\n    priority 100\n"), standby)


class SlotTest(unittest.TestCase):
    """Concurrent runs take separate state slots, namespaces and LANs."""

    def test_two_runs_two_slots(self):
        from harness import state
        old = state.STATE_DIR
        state.STATE_DIR = tempfile.mkdtemp()
        try:
            a, b = state.State(Logger()), state.State(Logger())
            a.acquire()
            b.acquire()
            self.assertEqual((a.slot, b.slot), (0, 1))
            self.assertNotEqual(a.state_file, b.state_file)
            b.add("file", os.path.join(state.STATE_DIR, "nothing"))
            a.release_all()
            c = state.State(Logger())
            c.acquire()  # slot 0 is free again
            self.assertEqual(c.slot, 0)
            c.release_all()
            b.release_all()
        finally:
            state.STATE_DIR = old

    def test_names_per_slot(self):
        self.assertEqual(netlab.lab_ns(0), "emh-lab")
        self.assertEqual(netlab.machine_ns("primary", 0), "emh-primary")
        self.assertEqual(netlab.lab_ns(3), "emh3-lab")
        self.assertEqual(netlab.machine_ns("primary", 3), "emh3-primary")


class NetlabTest(unittest.TestCase):
    def test_nixos_addressing(self):
        # NixOS numbers nodes in name order on 192.168.<vlan>.<n>
        self.assertEqual(netlab.addresses(["standby", "primary", "client"]),
                         {"client": "192.168.1.1", "primary": "192.168.1.2",
                          "standby": "192.168.1.3"})

    def test_hosts_file(self):
        hosts = netlab.hosts_file(["server", "client"])
        self.assertIn("192.168.1.1\tclient\n", hosts)
        self.assertIn("192.168.1.2\tserver\n", hosts)
        self.assertTrue(hosts.startswith("127.0.0.1\tlocalhost"))

    def test_interface_names_fit(self):
        self.assertLessEqual(len(netlab.host_veth("a" * 40)), 15)


class MachinesJsonTest(unittest.TestCase):
    def _story(self, decl):
        d = tempfile.mkdtemp()
        script = os.path.join(d, "s.py")
        open(script, "w").close()
        if decl is not None:
            with open(os.path.join(d, "s.machines.json"), "w") as f:
                f.write(decl if isinstance(decl, str) else json.dumps(decl))
        return script

    def test_valid(self):
        m = provision.load_machines(self._story({"machines": {"server": {"erlmcp": True},
                                                              "client": {}}}))
        self.assertEqual(sorted(m), ["client", "server"])
        self.assertTrue(provision.needs_erlmcp(m))

    def test_errors_are_clear(self):
        for decl, text in [(None, "is missing"), ("{", "invalid JSON"),
                           ({"machines": {}}, "non-empty"),
                           ({"machines": {"bad-name": {}}}, "Python identifier"),
                           ({"machines": {"s": {"unit": []}}}, "unknown keys")]:
            with self.assertRaises(HarnessError) as cm:
                provision.load_machines(self._story(decl))
            self.assertIn(text, str(cm.exception))

    def test_selftest_declaration(self):
        m = provision.load_machines("harness-selftest")
        self.assertEqual(sorted(m), ["client", "server"])
        for unit in m["server"]["units"]:
            self.assertTrue(os.path.isfile(os.path.join(provision.VM_TESTS, unit)))


class SealTest(unittest.TestCase):
    """provision + seal: /etc as NixOS lays it out (needs `systemctl`)."""

    def setUp(self):
        self.root = tempfile.mkdtemp()
        os.makedirs(os.path.join(self.root, "etc/systemd/system"))
        # Stands in for `erlmcp check-config`: refuses a config with "bogus".
        self.binary = os.path.join(tempfile.mkdtemp(), "erlmcp")
        with open(self.binary, "w") as f:
            f.write('#!/bin/sh\n! grep -q bogus "$2" || { echo "unknown key bogus"; exit 78; }\n')
        os.chmod(self.binary, 0o755)

    def at(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def link(self, path):
        target = os.readlink(self.at(path))
        self.assertTrue(target.startswith("/"), target)
        return target

    def seal(self, spec):
        provision.provision(self.root, "server", spec, ["client", "server"], self.binary)
        provision.seal(self.root, "server", spec, ["client", "server"], self.binary)

    def test_nixos_etc(self):
        self.seal({"erlmcp": True, "files": {"/etc/x.conf": {"content": "x\n"}},
                   "specialisations": {"debug": {"config": {"log": {"level": "debug"}}},
                                       "invalid": {"config": {"bogus": 1},
                                                   "validateConfig": False}}})
        self.assertEqual(self.link("/etc/erlmcp/erlmcp.toml"), "/etc/static/erlmcp/erlmcp.toml")
        self.assertEqual(self.link("/etc/systemd/system"), "/etc/static/systemd/system")
        self.assertEqual(self.link("/etc/x.conf"), "/etc/static/x.conf")
        self.assertEqual(self.link("/etc/hosts"), "/etc/static/hosts")
        etc = self.link("/etc/static")
        self.assertRegex(etc, r"^/nix/store/[0-9a-f]{32}-etc-server/etc$")
        conf = self.link(etc + "/erlmcp/erlmcp.toml")
        self.assertEqual(os.stat(self.at(conf)).st_mode & 0o777, 0o444)
        with open(self.at(conf), "rb") as f:
            self.assertEqual(tomllib.load(f)["node_name"], "server")
        for unit in ("erlmcp.service", "nix-store.mount", "harness-activate.service",
                     "local-fs.target.wants/nix-store.mount"):
            self.assertTrue(os.path.lexists(self.at(etc + "/systemd/system/" + unit)), unit)

        top = self.link("/nix/var/nix/profiles/system")
        self.assertEqual(self.link(top + "/etc"), etc)
        debug = self.link(top + "/specialisation/debug")
        with open(self.at(self.link(self.link(debug + "/etc") + "/erlmcp/erlmcp.toml")), "rb") as f:
            cfg = tomllib.load(f)
        self.assertEqual((cfg["log"]["level"], cfg["node_name"]), ("debug", "server"))
        with open(self.at(debug + "/bin/switch-to-configuration")) as f:
            script = f.read()
        self.assertIn(f"{debug}/activate", script)
        self.assertIn("systemctl reload erlmcp.service", script)
        with open(self.at(debug + "/activate")) as f:
            self.assertIn(self.link(debug + "/etc"), f.read())

    def test_secret_copied_not_linked(self):
        # environment.etc.<name>.mode: a regular file with that mode, not a
        # link into the world-readable store.
        self.seal({"erlmcp": True, "files": {
            "/etc/erlmcp/replication-secret": {"content": "s3cret-s3cret-s3cret\n", "mode": "0400"},
            "/etc/plain.conf": {"content": "x\n"}}})
        secret = self.at("/etc/erlmcp/replication-secret")
        self.assertFalse(os.path.islink(secret))
        self.assertEqual(os.stat(secret).st_mode & 0o777, 0o400)
        self.assertEqual(self.link("/etc/plain.conf"), "/etc/static/plain.conf")
        store = self.at("/nix/store")
        for dirpath, _, files in os.walk(store):
            for f in files:
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    with open(p, errors="replace") as fh:
                        self.assertNotIn("s3cret", fh.read(), p)

    def test_switch_restarts_on_replication_changes(self):
        self.seal({"erlmcp": True, "role": "primary",
                   "config": {"replication": {"peer": "standby:9718"}},
                   "specialisations": {"degrade": {"config": {
                       "replication": {"on_standby_loss": "degrade"}}}}})
        top = self.link("/nix/var/nix/profiles/system")
        degrade = self.link(top + "/specialisation/degrade")
        with open(self.at(top + "/erlmcp-restart-triggers")) as f:
            mine = f.read()
        with open(self.at(degrade + "/erlmcp-restart-triggers")) as f:
            theirs = f.read()
        self.assertNotEqual(mine, theirs)
        self.assertIn('"on_standby_loss": "degrade"', theirs)
        with open(self.at(degrade + "/bin/switch-to-configuration")) as f:
            script = f.read()
        self.assertIn("systemctl stop erlmcp.service erlmcp.socket erlmcp-ops.socket", script)
        self.assertIn("erlmcp-restart-triggers", script)
        for unit in ("erlmcp.socket.d/listen.conf", "erlmcp-ops.socket.d/listen.conf"):
            self.assertTrue(os.path.exists(self.at(self.link("/etc/static") +
                                                   "/systemd/system/" + unit)), unit)

    def test_a_config_nixos_would_not_build_is_refused(self):
        with self.assertRaises(HarnessError) as cm:
            self.seal({"erlmcp": True, "specialisations": {"bad": {"config": {"bogus": 1}}}})
        self.assertIn("check-config", str(cm.exception))
        self.assertIn("specialisation bad", str(cm.exception))

    def test_plain_machine(self):
        self.seal({})
        self.assertEqual(self.link("/etc/hostname"), "/etc/static/hostname")
        self.assertFalse(os.path.lexists(self.at("/etc/erlmcp/erlmcp.toml")))

    def test_specialisations_need_erlmcp(self):
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "s.machines.json"), "w") as f:
            json.dump({"machines": {"c": {"specialisations": {"x": {}}}}}, f)
        open(os.path.join(d, "s.py"), "w").close()
        with self.assertRaises(HarnessError):
            provision.load_machines(os.path.join(d, "s.py"))

    def test_prometheus_layout(self):
        # A stand-in for Debian's prometheus binary.
        fake = os.path.join(tempfile.mkdtemp(), "prometheus")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\n")
        old = os.environ.get("CI_ERLMCP_PROMETHEUS")
        os.environ["CI_ERLMCP_PROMETHEUS"] = fake
        try:
            self.seal({"erlmcp": True, "prometheus": {"scrape_interval": "2s"}})
        finally:
            if old is None:
                del os.environ["CI_ERLMCP_PROMETHEUS"]
            else:
                os.environ["CI_ERLMCP_PROMETHEUS"] = old
        self.assertTrue(os.access(self.at("/usr/bin/prometheus"), os.X_OK))
        etc = self.link("/etc/static")
        self.assertEqual(self.link("/etc/prometheus"), "/etc/static/prometheus")
        with open(self.at(etc + "/prometheus/prometheus.yml")) as f:
            conf = f.read()
        self.assertIn("  scrape_interval: 2s\n", conf)
        self.assertIn("  - /etc/prometheus/erlmcp.rules.yml\n", conf)
        self.assertIn("job_name: erlmcp", conf)
        self.assertIn("127.0.0.1:9718", conf)
        with open(self.at(etc + "/prometheus/erlmcp.rules.yml")) as f, \
                open(os.path.join(provision.REPO, "dist/prometheus/erlmcp.rules.yml")) as g:
            self.assertEqual(f.read(), g.read(), "erlmcp's rules, unchanged")
        self.assertTrue(os.path.lexists(
            self.at(etc + "/systemd/system/multi-user.target.wants/prometheus.service")))

    def test_prometheus_needs_erlmcp_and_known_keys(self):
        for spec in ({"prometheus": {}}, {"erlmcp": True, "prometheus": {"retention": "1d"}},
                     {"erlmcp": True, "prometheus": True}):
            d = tempfile.mkdtemp()
            with open(os.path.join(d, "s.machines.json"), "w") as f:
                json.dump({"machines": {"c": spec}}, f)
            open(os.path.join(d, "s.py"), "w").close()
            with self.assertRaises(HarnessError):
                provision.load_machines(os.path.join(d, "s.py"))

    def test_releases_layout(self):
        # Two "releases": scripts that say their version, and check-config.
        bins = tempfile.mkdtemp()
        paths = {}
        for name, version in (("cur", "0.1.0"), ("next", "0.1.0-next")):
            paths[name] = os.path.join(bins, name)
            with open(paths[name], "w") as f:
                f.write(f'#!/bin/sh\n[ "$1" = --version ] && echo "erlmcp {version}"; exit 0\n')
            os.chmod(paths[name], 0o755)
        self.binary = paths["cur"]
        old = os.environ.get("CI_ERLMCP_NEXT_BINARY")
        os.environ["CI_ERLMCP_NEXT_BINARY"] = paths["next"]
        try:
            self.seal({"erlmcp": True, "releases": True})
        finally:
            if old is None:
                del os.environ["CI_ERLMCP_NEXT_BINARY"]
            else:
                os.environ["CI_ERLMCP_NEXT_BINARY"] = old
        for version in ("0.1.0", "0.1.0-next"):
            self.assertTrue(os.access(self.at(f"/opt/erlmcp/releases/{version}/erlmcp"), os.X_OK))
        self.assertEqual(self.link("/opt/erlmcp/current"), "/opt/erlmcp/releases/0.1.0")
        self.assertEqual(self.link("/usr/bin/erlmcp"), "/opt/erlmcp/current/erlmcp")
        etc = self.link("/etc/static")
        with open(self.at(etc + "/systemd/system/erlmcp.service.d/releases.conf")) as f:
            self.assertIn("ExecStart=/opt/erlmcp/current/erlmcp serve", f.read())
        self.assertTrue(os.path.lexists(self.at(
            etc + "/systemd/system/multi-user.target.wants/erlmcp-upgrade-resume.service")))

    def test_releases_need_the_next_binary_and_erlmcp(self):
        old = os.environ.pop("CI_ERLMCP_NEXT_BINARY", None)
        try:
            with self.assertRaises(HarnessError) as cm:
                self.seal({"erlmcp": True, "releases": True})
            self.assertIn("--next-binary", str(cm.exception))
        finally:
            if old is not None:
                os.environ["CI_ERLMCP_NEXT_BINARY"] = old
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "s.machines.json"), "w") as f:
            json.dump({"machines": {"c": {"releases": True}}}, f)
        open(os.path.join(d, "s.py"), "w").close()
        with self.assertRaises(HarnessError):
            provision.load_machines(os.path.join(d, "s.py"))


def _read_cpio(data):
    entries, i = {}, 0
    while True:
        hdr = data[i:i + 110]
        assert hdr[:6] == b"070701", hdr[:6]
        f = [int(hdr[6 + 8 * k:14 + 8 * k], 16) for k in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        i += 110
        name = data[i:i + namesize - 1].decode()
        i += namesize + (-(110 + namesize) % 4)
        body = data[i:i + size]
        i += size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body, (f[9], f[10]))


class InitrdTest(unittest.TestCase):
    def test_module_order_and_archive(self):
        tree = tempfile.mkdtemp()
        moddir = os.path.join(tree, "lib/modules/9.9")
        os.makedirs(os.path.join(moddir, "kernel"))
        dep = {
            "kernel/crc32c_generic.ko": [],
            "kernel/virtio.ko": [], "kernel/virtio_ring.ko": [],
            "kernel/virtio_pci.ko": ["kernel/virtio_ring.ko", "kernel/virtio.ko"],
            "kernel/virtio_blk.ko": ["kernel/virtio_ring.ko", "kernel/virtio.ko"],
            "kernel/ext4.ko": ["kernel/crc16.ko", "kernel/jbd2.ko"],
            "kernel/crc16.ko": [], "kernel/jbd2.ko": [],
        }
        with open(os.path.join(moddir, "modules.dep"), "w") as f:
            for k, v in dep.items():
                f.write(f"{k}: {' '.join(v)}\n")
                open(os.path.join(moddir, k), "wb").write(b"MOD " + k.encode())
        busybox = os.path.join(tree, "busybox")
        open(busybox, "wb").write(b"\x7fELF fake")
        out = os.path.join(tree, "initrd")
        mods = initrd.build(tree, "9.9", busybox, out)
        names = [os.path.basename(m) for m in mods]
        for before, after in [("virtio.ko", "virtio_pci.ko"), ("jbd2.ko", "ext4.ko"),
                              ("crc32c_generic.ko", "ext4.ko")]:
            self.assertLess(names.index(before), names.index(after))
        self.assertEqual(len(names), len(set(names)))
        entries = _read_cpio(gzip.decompress(open(out, "rb").read()))
        self.assertEqual(entries["init"][0] & 0o777, 0o755)
        self.assertIn(b"switch_root", entries["init"][1])
        self.assertEqual(entries["dev/console"][2], (5, 1))
        self.assertEqual(entries["modules.order"][1].decode().split(), names)
        # the init script is valid shell
        subprocess.run(["sh", "-n", "-c", entries["init"][1].decode()], check=True)


class FakeMachine(Machine):
    """Runs commands with the host's bash: tests the API's semantics."""

    backend = "fake"

    def __init__(self):
        d = tempfile.mkdtemp()
        super().__init__("fake", d, Logger(stream=open(os.devnull, "w")), d, d)
        self.up = False

    def is_up(self):
        return self.up

    def _start(self):
        self.up = True

    def connect(self):
        pass

    def _exec(self, shell_command, timeout):
        p = subprocess.run(["bash", "-c", shell_command], capture_output=True, text=True)
        return Result(p.returncode, p.stdout, p.stderr)


class MachineApiTest(unittest.TestCase):
    def setUp(self):
        self.m = FakeMachine()

    def test_execute_returns_status_and_stdout_only(self):
        self.assertEqual(self.m.execute("echo out; echo err >&2; exit 3"), (3, "out\n"))
        self.assertEqual(self.m.execute("false", check_return=False), (-1, ""))

    def test_pipefail_and_nounset(self):
        self.assertNotEqual(self.m.execute("false | true")[0], 0)
        self.assertNotEqual(self.m.execute("echo $UNSET_VARIABLE_X")[0], 0)

    def test_succeed_message_has_output(self):
        with self.assertRaises(RequestedAssertionFailed) as cm:
            self.m.succeed("echo so; echo se >&2; exit 4")
        msg = str(cm.exception)
        for part in ("exit code 4", "so", "se"):
            self.assertIn(part, msg)
        self.assertEqual(self.m.succeed("echo a", "echo b"), "a\nb\n")

    def test_fail(self):
        self.m.fail("exit 1")
        with self.assertRaises(RequestedAssertionFailed):
            self.m.fail("true")

    def test_timeout_kills(self):
        t0 = time.monotonic()
        status, _ = self.m.execute("sleep 30", timeout=1)
        self.assertEqual(status, 124)
        self.assertLess(time.monotonic() - t0, 10)

    def test_wait_until(self):
        flag = os.path.join(self.m.workdir, "flag")
        self.m.succeed(f"(sleep 1; touch {flag}) >/dev/null 2>&1 &")
        self.m.wait_until_succeeds(f"test -e {flag}", timeout=10)
        self.m.wait_until_fails(f"test ! -e {flag}", timeout=10)
        with self.assertRaises(RequestedAssertionFailed):
            self.m.wait_until_succeeds("false", timeout=1)

    def test_unit_info_parsing(self):
        self.m._exec = lambda cmd, timeout: Result(
            0, "ActiveState=active\nDescription=a=b\n" if "show" in cmd else "")
        info = self.m.get_unit_info("x.service")
        self.assertEqual(info["Description"], "a=b")
        self.m._exec = lambda cmd, timeout: Result(0, "ActiveState=failed\n")
        with self.assertRaises(RequestedAssertionFailed):
            self.m.wait_for_unit("x.service", timeout=2)


if __name__ == "__main__":
    unittest.main()
