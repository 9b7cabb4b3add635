"""One story run: set up the machines, execute the scenario, clean up always.

The scenario script is executed with `exec` and the same globals the NixOS
test driver injects (the subset listed in GLOBALS below), machines named by
their role.  Everything the run creates is recorded in the state file
(state.py) and removed in `finally`, on SIGINT/SIGTERM/SIGHUP, and by the next
run if this one was killed.  On failure the journals and console logs of
every machine are left in results/vm-tests/<story>-<timestamp>/.
"""

import os
import signal
import threading
import time
import traceback
import unittest
from contextlib import contextmanager

from . import host, netlab, provision, rootfs
from .errors import HarnessError, RequestedAssertionFailed
from .log import Logger
from .machine import retry
from .state import State
from .util import exclusive, run

RUN_ROOT = "/var/tmp/erlmcp-ci"
RESULTS = os.path.join(provision.REPO, "results", "vm-tests")


class AssertionTester(unittest.TestCase):
    """`t` in a scenario: t.assertEqual(...), raising RequestedAssertionFailed."""

    failureException = RequestedAssertionFailed

    def runTest(self):  # pragma: no cover - unittest wants one
        pass


class Terminated(BaseException):
    """SIGTERM/SIGHUP/alarm turned into an exception so `finally` runs."""


class Driver:
    def __init__(self, story, backend="nspawn", binary=None, keep_logs=False,
                 timeout=3600, logger=None):
        self.story = story
        self.story_name = os.path.basename(story)[:-3] if story.endswith(".py") else story
        self.backend = backend
        self.binary = binary
        self.keep_logs = keep_logs
        self.timeout = timeout
        self.log = logger or Logger()
        self.state = State(self.log)
        self.machines = {}
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out_dir = os.path.join(RESULTS, f"{self.story_name}-{self.stamp}")
        self.run_dir = None

    # -- entry point ------------------------------------------------------------
    def run(self):
        """Run the story; return True when it passed."""
        script_path, _ = provision.story_paths(self.story)
        specs = provision.load_machines(self.story)
        self.prelude = provision.load_prelude(self.story)
        os.makedirs(self.out_dir, exist_ok=True)
        logfile = open(os.path.join(self.out_dir, "run.log"), "w")
        self.log.files.append(logfile)
        ok = False
        old = self._install_signals()
        t0 = time.monotonic()
        try:
            self.log.info(f"story {self.story_name} on {self.backend}: "
                          f"machines {', '.join(sorted(specs))}")
            self.state.acquire()
            with self.log.nested("set up"):
                self._setup(specs)
            ok = self._exec_script(script_path)
        except HarnessError as e:
            self.log.error(f"harness: {e}")
        except Exception as e:
            self.log.error("harness: " + "".join(traceback.format_exception(e)).rstrip())
        except (KeyboardInterrupt, Terminated) as e:
            self.log.error(f"interrupted ({str(e) or type(e).__name__}): cleaning up")
        finally:
            # from here on nothing may stop the clean-up: a second Ctrl-C or
            # SIGTERM is ignored (collecting logs has its own time limits)
            signal.alarm(0)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            try:
                if not ok or self.keep_logs:
                    self._collect()
            finally:
                with self.log.nested("clean up"):
                    for m in self.machines.values():
                        try:
                            m.release()
                        except Exception as e:  # still remove the rest
                            self.log.error(f"releasing {m.name}: {e}")
                    self.state.release_all()
                self._restore_signals(old)
                took = time.monotonic() - t0
                if self.log.subtests:
                    self.log.info("subtests:\n" + self.log.summary())
                self.log.info(f"story {self.story_name} ({self.backend}): "
                              f"{'PASSED' if ok else 'FAILED'} in {took:.1f} s")
                if not ok:
                    self.log.info(f"logs: {self.out_dir}")
                self.log.files.remove(logfile)
                logfile.close()
        return ok

    # -- signals ------------------------------------------------------------------
    def _install_signals(self):
        def terminate(signum, _frame):
            if signum == signal.SIGALRM:
                raise Terminated(f"the story ran longer than --timeout {self.timeout} s")
            raise Terminated(signal.Signals(signum).name)

        old = {s: signal.signal(s, terminate) for s in
               (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)}
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.timeout:
            signal.alarm(int(self.timeout))
        return old

    def _restore_signals(self, old):
        signal.alarm(0)
        for s, h in old.items():
            signal.signal(s, h)

    # -- set up -------------------------------------------------------------------
    def _setup(self, specs):
        # Concurrent runs (--jobs) take turns at apt and at the caches.
        with exclusive(os.path.join(rootfs.CACHE_DIR, ".prepare.lock")):
            host.ensure_host(self.log, self.backend)
            tree = rootfs.ensure_rootfs(self.log, self.state)
            if self.backend == "qemu":
                from .qemu import QemuImage
                image = QemuImage(self.log, self.state, tree)
                image.prepare()
        os.makedirs(RUN_ROOT, exist_ok=True)
        self.run_dir = os.path.join(RUN_ROOT, f"run-{self.stamp}-{os.getpid()}")
        self.state.add("tree", self.run_dir)
        os.makedirs(self.run_dir)
        shared = os.path.join(self.run_dir, "shared")
        os.makedirs(shared)
        names = sorted(specs)
        addrs = netlab.addresses(names)
        lab = netlab.Lab(self.state)
        lab.create()
        if self.state.slot:
            self.log.info(f"state slot {self.state.slot}: namespaces {netlab.prefix(self.state.slot)}*")
        for name in names:
            spec = specs[name]
            workdir = os.path.join(self.run_dir, name)
            os.makedirs(workdir)
            root = self._overlay(tree, workdir)
            provision.provision(root, name, spec, names, self.binary)
            if self.backend == "nspawn":
                from .nspawn import NspawnMachine
                netns = lab.plug(name, addrs[name])
                m = NspawnMachine(name, workdir, self.log, self.out_dir, shared,
                                  self.state, lab, root, netns)
            else:
                from .qemu import QemuMachine
                m = QemuMachine(name, workdir, self.log, self.out_dir, shared,
                                self.state, image, root, addrs[name], names.index(name),
                                spec.get("memory", 1024), spec.get("cpus", 1))
                m.add_vm_files()
            # Last: /etc as NixOS has it (read-only store, /etc/static links).
            provision.seal(root, name, spec, names, self.binary)
            self.machines[name] = m
            self.log.info(f"{name}: {addrs[name]}, root {root}")
        if self.backend == "qemu":
            self._build_disks()

    def _build_disks(self):
        """mkfs.ext4 -d of every machine at once (I/O and CPU overlap)."""
        errors = []

        def build(m):
            try:
                m.build_disk()
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=build, args=(m,)) for m in self.machines.values()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise errors[0]

    def _overlay(self, lower, workdir):
        upper, work, root = (os.path.join(workdir, d) for d in ("upper", "work", "root"))
        for d in (upper, work, root):
            os.makedirs(d)
        self.state.add("mount", root)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={upper},workdir={work}", root],
            "mounting the machine's overlay failed")
        return root

    # -- the script -----------------------------------------------------------------
    def globals(self):
        @contextmanager
        def subtest(name):
            with self.log.subtest(name):
                yield

        def start_all():
            with self.log.nested("start all machines"):
                for m in self.machines.values():
                    m.start()

        def join_all():
            with self.log.nested("wait for all machines to finish"):
                for m in self.machines.values():
                    m.wait_for_shutdown()

        symbols = dict(
            start_all=start_all, join_all=join_all, subtest=subtest, log=self.log,
            retry=retry, os=os, t=AssertionTester(), driver=self,
            machines=list(self.machines.values()),
            RequestedAssertionFailed=RequestedAssertionFailed,
        )
        symbols.update(self.machines)
        if len(self.machines) == 1:
            symbols["machine"] = next(iter(self.machines.values()))
        return symbols

    def _exec_script(self, path):
        # A story may list helper scripts in machines.json "prelude"; they are
        # prepended, as the NixOS tests do (vm-tests/test-script.nix), so the
        # story runs with the same globals under both drivers.
        source = provision.script_source(path)
        code = compile(source, path, "exec")
        with self.log.nested("run the scenario script"):
            try:
                exec(code, self.globals(), None)
                return True
            except (RequestedAssertionFailed, AssertionError, HarnessError, Exception) as e:
                self._report(e, path, source)
                return False

    def _report(self, exc, path, source):
        """Print the failure: the script's own frames, then the message."""
        tb = traceback.extract_tb(exc.__traceback__)
        frames = [f for f in tb if f.filename == path]
        self.log.error("scenario failed; traceback (script frames):")
        lines = source.splitlines()
        # The script is the prelude files, then the story: name the file a
        # line comes from.
        with open(path, encoding="utf-8") as f:
            story_start = len(lines) - len(f.read().splitlines())

        def where(n):
            if n > story_start:
                return f"{os.path.basename(path)}:{n - story_start}"
            return f"prelude line {n}"
        for f in frames:
            self.log.error(f"  {where(f.lineno or 0)}: "
                           f"{lines[f.lineno - 1].strip() if f.lineno else ''}")
        if not isinstance(exc, (RequestedAssertionFailed, HarnessError)):
            self.log.error("".join(traceback.format_exception(exc)).rstrip())
        self.log.error(f"{type(exc).__name__}: {exc}")

    # -- results --------------------------------------------------------------------
    def _collect(self):
        with self.log.nested(f"collecting journals and consoles into {self.out_dir}"):
            for m in self.machines.values():
                try:
                    m.collect_logs(self.out_dir)
                except Exception as e:
                    self.log.error(f"collecting logs of {m.name}: {e}")
