#!/usr/bin/env python3
"""The upgrade guard's script (nixos-modules/erlmcp-upgrade-guard.sh) against
a fake NixOS: systems as directories with `bin/switch-to-configuration` and
`sw/bin/erlmcp`, the running system as a link, and fake `curl` (erlmcp's
/status and /readyz), `systemctl`, `systemd-run` and `nix-env` on PATH.
The NixOS test (vm-tests/upgrade-rollback.nix) runs it for real; this runs
here, in seconds, every path of its decisions.

    python3 nixos-modules/tests/upgrade-guard-test.py [-v]
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
GUARD = os.path.join(os.path.dirname(HERE), "erlmcp-upgrade-guard.sh")

CURRENT, NEXT = "0.1.0", "0.1.0-next"

# erlmcp as the fake world says: $W/release, $W/state, $W/ready, $W/down.
CURL = r"""#!/bin/sh
url=""
for a in "$@"; do case $a in http*) url=$a ;; esac; done
[ -e "$W/down" ] && exit 7
case $url in
  */status)
    printf '{"version":"%s","upgrade":{"release":"%s","state":"%s"}}\n' \
      "$(cat "$W/release")" "$(cat "$W/release")" "$(cat "$W/state")" ;;
  */readyz)
    [ -e "$W/ready" ] || exit 22 ;;
esac
"""

SYSTEMCTL = r"""#!/bin/sh
case "$*" in
  *NRestarts*) cat "$W/restarts" 2>/dev/null || echo 0 ;;
  is-failed*) [ -e "$W/failed" ] ;;
  *) echo "systemctl $*" >> "$W/log" ;;
esac
"""

# Runs the command at once (as --wait would), and logs it.
SYSTEMD_RUN = r"""#!/bin/sh
echo "systemd-run $*" >> "$W/log"
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""

NIX_ENV = r"""#!/bin/sh
echo "nix-env $*" >> "$W/log"
"""

# A system's switch-to-configuration: it becomes the running system, and its
# release runs (having taken the data back: rolled_back, ready).
SWITCH = r"""#!/bin/sh
echo "switch-to-configuration @SYS@ $1" >> "$W/log"
ln -sfn @SYS@ "$W/current-system"
echo @RELEASE@ > "$W/release"
echo rolled_back > "$W/state"
touch "$W/ready"
rm -f "$W/failed"
"""


class Guard(unittest.TestCase):
    def setUp(self):
        self.w = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.w)
        self.bin = os.path.join(self.w, "bin")
        os.makedirs(self.bin)
        for name, text in (("curl", CURL), ("systemctl", SYSTEMCTL),
                           ("systemd-run", SYSTEMD_RUN), ("nix-env", NIX_ENV)):
            self.script(os.path.join(self.bin, name), text)
        self.systems = {}
        for name, release in (("old", CURRENT), ("new", NEXT)):
            top = os.path.join(self.w, "store", f"nixos-system-{name}")
            self.script(os.path.join(top, "sw", "bin", "erlmcp"),
                        f'#!/bin/sh\necho "erlmcp {release}"\n')
            self.script(os.path.join(top, "bin", "switch-to-configuration"),
                        SWITCH.replace("@SYS@", top).replace("@RELEASE@", release))
            self.systems[name] = top
        self.data = os.path.join(self.w, "data")
        self.state = os.path.join(self.w, "guard")
        os.makedirs(self.data)
        self.profile = os.path.join(self.w, "profiles", "system")
        os.makedirs(os.path.dirname(self.profile))

    def script(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)

    def world(self, release, state, ready=True, restarts=0):
        for k, v in (("release", release), ("state", state), ("restarts", str(restarts))):
            with open(os.path.join(self.w, k), "w") as f:
                f.write(v + "\n")
        ready_file = os.path.join(self.w, "ready")
        if ready:
            open(ready_file, "w").close()
        elif os.path.exists(ready_file):
            os.unlink(ready_file)

    def later(self, seconds, fn):
        t = threading.Timer(seconds, fn)
        t.start()
        self.addCleanup(t.cancel)

    def running(self, name):
        os.symlink(self.systems[name], os.path.join(self.w, "current-system"))

    def before(self, name):
        os.makedirs(os.path.join(self.w, "run"), exist_ok=True)
        with open(os.path.join(self.w, "run", "before"), "w") as f:
            f.write(self.systems[name] + "\n")

    def record(self, state):
        with open(os.path.join(self.data, "upgrade.json"), "w") as f:
            json.dump({"release": NEXT, "previous": CURRENT, "state": state, "since": 1}, f)

    def guard(self, system="new", deadline=3):
        exe = os.path.join(self.systems[system], "sw", "bin", "erlmcp")
        env = dict(os.environ, W=self.w, PATH=f"{self.bin}:{os.environ['PATH']}",
                   ERLMCP_GUARD_OPS="http://127.0.0.1:9718",
                   ERLMCP_GUARD_DATA=self.data, ERLMCP_GUARD_DEADLINE=str(deadline),
                   ERLMCP_GUARD_STATE=self.state,
                   ERLMCP_GUARD_BEFORE=os.path.join(self.w, "run", "before"),
                   ERLMCP_GUARD_SYSTEM=os.path.join(self.w, "current-system"),
                   ERLMCP_GUARD_PROFILE=self.profile)
        t0 = time.monotonic()
        p = subprocess.run(["bash", GUARD, exe], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        self.took = time.monotonic() - t0
        self.out = p.stdout
        return p.returncode

    def last(self):
        with open(os.path.join(self.state, "last.json")) as f:
            return json.load(f)

    def log(self):
        try:
            with open(os.path.join(self.w, "log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def good(self):
        with open(os.path.join(self.state, "good")) as f:
            return f.read().strip()

    def pending(self):
        return os.path.exists(os.path.join(self.state, "pending.json"))

    # -- a switch to the new release ----------------------------------------------

    def test_confirmed_after_probation(self):
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation")
        self.later(1.5, lambda: self.world(NEXT, "confirmed"))
        self.assertEqual(self.guard(deadline=10), 0, self.out)
        v = self.last()
        self.assertEqual((v["outcome"], v["release"], v["from"]), ("confirmed", NEXT, CURRENT), v)
        self.assertEqual(self.good(), self.systems["new"])
        self.assertFalse(self.pending())
        self.assertNotIn("switch-to-configuration", self.log())
        self.assertFalse(os.path.exists(os.path.join(self.w, "run", "before")), "taken once")

    def test_unready_until_the_deadline_switches_back_and_leaves_the_reason(self):
        self.running("new")
        self.before("old")
        self.record("probation")
        self.world(NEXT, "probation", ready=False)
        self.assertEqual(self.guard(deadline=2), 0, self.out)
        self.assertGreaterEqual(self.took, 1)  # whole seconds: 2 s from x.9 s ends at x+2
        why = f"{NEXT} failed: not ready before the deadline"
        with open(os.path.join(self.data, "upgrade.json")) as f:
            self.assertEqual(json.load(f)["rollback_reason"], why)
        self.assertIn("rolling back: " + why, self.out)
        log = self.log()
        self.assertIn("systemd-run --unit=erlmcp-upgrade-rollback", log)
        self.assertIn(f"switch-to-configuration {self.systems['old']} test", log)
        self.assertNotIn("nix-env", log, "the profile does not point at the failed system")
        v = self.last()
        self.assertEqual((v["outcome"], v["release"], v["from"], v["reason"]),
                         ("rolled_back", CURRENT, NEXT, why), v)
        self.assertEqual(self.good(), self.systems["old"])
        self.assertFalse(self.pending())

    def test_ready_but_not_confirmed(self):
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation", ready=True)
        self.guard(deadline=2)
        self.assertEqual(self.last()["reason"],
                         f"{NEXT} failed: not confirmed (healthy long enough) before the deadline")

    def test_no_answer(self):
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation")
        open(os.path.join(self.w, "down"), "w").close()
        self.later(3, lambda: os.unlink(os.path.join(self.w, "down")))  # the old one answers
        self.guard(deadline=2)
        self.assertEqual(self.last()["reason"],
                         f"{NEXT} failed: no answer from the daemon before the deadline")

    def test_crash_loop(self):
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation", ready=False, restarts=0)
        self.later(1, lambda: self.world(NEXT, "probation", ready=False, restarts=3))
        self.guard(deadline=30)
        self.assertLess(self.took, 10, "long before the deadline")
        self.assertEqual(self.last()["reason"], f"{NEXT} failed: a crash loop (3 restarts)")

    def test_failed_unit(self):
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation", ready=False)
        open(os.path.join(self.w, "failed"), "w").close()
        self.guard(deadline=30)
        self.assertLess(self.took, 10)
        self.assertEqual(self.last()["reason"],
                         f"{NEXT} failed: the service failed (systemd gave up restarting it)")

    def test_a_reason_is_left_only_for_a_release_on_probation_or_confirmed(self):
        self.running("new")
        self.before("old")
        self.record("rolled_back")
        self.world(NEXT, "probation", ready=False)
        self.guard(deadline=1)
        with open(os.path.join(self.data, "upgrade.json")) as f:
            self.assertNotIn("rollback_reason", json.load(f))

    def test_the_profile_goes_back_with_a_switch(self):
        # nixos-rebuild switch made the failed system generation 2.
        base = os.path.dirname(self.profile)
        os.symlink(self.systems["old"], os.path.join(base, "system-1-link"))
        os.symlink(self.systems["new"], os.path.join(base, "system-2-link"))
        os.symlink("system-2-link", self.profile)
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation", ready=False)
        self.guard(deadline=1)
        log = self.log()
        self.assertIn(f"nix-env -p {self.profile} --rollback", log)
        self.assertIn(f"switch-to-configuration {self.systems['old']} switch", log)

    def test_the_profile_is_set_when_its_previous_generation_is_another(self):
        base = os.path.dirname(self.profile)
        os.symlink(self.systems["new"], os.path.join(base, "system-7-link"))
        os.symlink("system-7-link", self.profile)
        self.running("new")
        self.before("old")
        self.world(NEXT, "probation", ready=False)
        self.guard(deadline=1)
        self.assertIn(f"nix-env -p {self.profile} --set {self.systems['old']}", self.log())

    def test_without_a_pre_switch_record_the_last_good_system(self):
        os.makedirs(self.state)
        with open(os.path.join(self.state, "good"), "w") as f:
            f.write(self.systems["old"] + "\n")
        self.running("new")
        self.world(NEXT, "probation", ready=False)
        self.guard(deadline=1)
        self.assertIn(f"switch-to-configuration {self.systems['old']} test", self.log())

    def test_nothing_to_go_back_to(self):
        self.running("new")
        self.world(NEXT, "probation", ready=False)
        self.assertEqual(self.guard(deadline=1), 1)
        self.assertIn("no configuration to switch back to", self.out)
        self.assertNotIn("switch-to-configuration", self.log())

    # -- boots and restarts ---------------------------------------------------------

    def test_first_boot_records_the_good_system(self):
        self.running("old")
        self.world(CURRENT, "confirmed")
        self.assertEqual(self.guard("old"), 0, self.out)
        self.assertEqual(self.good(), self.systems["old"])
        self.assertFalse(os.path.exists(os.path.join(self.state, "last.json")))

    def pend(self, phase, reason=None):
        os.makedirs(self.state, exist_ok=True)
        p = {"phase": phase, "candidate": self.systems["new"], "target": self.systems["old"],
             "from": CURRENT, "to": NEXT, "started": int(time.time()) - 5}
        if reason:
            p["reason"] = reason
        with open(os.path.join(self.state, "pending.json"), "w") as f:
            json.dump(p, f)

    def test_a_boot_into_the_old_system_ends_an_interrupted_upgrade(self):
        # A crash in the middle of the new release's migration; a `test`
        # switch does not outlive it.
        self.pend("switched")
        self.running("old")
        self.world(CURRENT, "confirmed")
        self.assertEqual(self.guard("old"), 0, self.out)
        v = self.last()
        self.assertEqual((v["outcome"], v["release"], v["from"]), ("rolled_back", CURRENT, NEXT), v)
        self.assertIn("before 0.1.0-next was confirmed", v["reason"])
        self.assertFalse(self.pending())
        self.assertEqual(self.good(), self.systems["old"])
        self.assertNotIn("switch-to-configuration", self.log())

    def test_a_boot_into_the_new_system_keeps_watching(self):
        self.pend("switched")
        self.running("new")
        self.world(NEXT, "probation")
        self.later(1, lambda: self.world(NEXT, "confirmed"))
        self.assertEqual(self.guard("new", deadline=10), 0, self.out)
        self.assertIn("still watching", self.out)
        self.assertEqual(self.last()["outcome"], "confirmed")

    def test_the_switched_back_system_finishes_the_rollback(self):
        # The instance the switch back starts (or the next boot's, after a
        # crash in the middle of the previous release's down migration).
        why = f"{NEXT} failed: not ready before the deadline"
        self.pend("rolling_back", why)
        self.running("old")
        self.world(CURRENT, "probation", ready=False)
        self.later(1, lambda: self.world(CURRENT, "rolled_back"))
        self.assertEqual(self.guard("old", deadline=5), 0, self.out)
        v = self.last()
        self.assertEqual((v["outcome"], v["release"], v["from"], v["reason"]),
                         ("rolled_back", CURRENT, NEXT, why), v)
        self.assertGreaterEqual(v["after_secs"], 5)
        self.assertFalse(self.pending())

    def test_a_switch_back_that_did_not_happen_is_done_again(self):
        self.pend("rolling_back", "why")
        self.running("new")
        self.world(NEXT, "probation", ready=False)
        self.assertEqual(self.guard("new", deadline=5), 0, self.out)
        self.assertIn(f"switch-to-configuration {self.systems['old']} test", self.log())
        self.assertEqual(self.last()["outcome"], "rolled_back")

    def test_a_previous_release_that_does_not_come_back_needs_a_person(self):
        self.pend("rolling_back", "why")
        self.running("old")
        self.world(CURRENT, "probation", ready=False)
        open(os.path.join(self.w, "failed"), "w").close()
        self.assertEqual(self.guard("old", deadline=1), 1)
        self.assertEqual(self.last()["outcome"], "stuck")
        self.assertIn("needs a person", self.out)


if __name__ == "__main__":
    unittest.main()
