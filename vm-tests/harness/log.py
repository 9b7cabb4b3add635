"""Console logging with wall-clock offsets, nesting and timed subtests.

Every line starts with the seconds elapsed since the run began, so a log
reads as a timeline.  `subtest(name)` prints the name when it starts and its
wall time when it ends (and marks it FAILED when an exception leaves it);
the summary at the end lists every subtest with its time.
"""

import sys
import threading
import time
from contextlib import contextmanager


class Logger:
    """The `log` object a scenario sees (`log.info(...)`, as under NixOS)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self.depth = 0
        self.lock = threading.Lock()
        self.subtests = []  # (name, seconds, ok)
        self.files = []  # extra sinks (the run's log file)

    # -- output -------------------------------------------------------------
    def _emit(self, text):
        stamp = f"[{time.monotonic() - self.t0:7.2f}s] "
        pad = "  " * self.depth
        with self.lock:
            for line in str(text).splitlines() or [""]:
                out = f"{stamp}{pad}{line}\n"
                self.stream.write(out)
                for f in self.files:
                    f.write(out)
            self.stream.flush()
            for f in self.files:
                f.flush()

    def log(self, message, attrs=None):
        prefix = f"{attrs['machine']}: " if attrs and "machine" in attrs else ""
        self._emit(prefix + str(message))

    info = log

    def warning(self, message):
        self._emit(f"WARNING: {message}")

    def error(self, message):
        self._emit(f"ERROR: {message}")

    def __call__(self, message):
        self.log(message)

    # -- structure ----------------------------------------------------------
    @contextmanager
    def nested(self, message, attrs=None):
        self.log(message, attrs)
        self.depth += 1
        start = time.monotonic()
        try:
            yield
        finally:
            self.depth -= 1
            took = time.monotonic() - start
            if took >= 1.0:
                self.log(f"({message}: {took:.2f} s)", attrs)

    @contextmanager
    def subtest(self, name):
        self._emit(f"subtest: {name}")
        self.depth += 1
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.depth -= 1
            took = time.monotonic() - start
            self.subtests.append((name, took, ok))
            state = "ok" if ok else "FAILED"
            self._emit(f"subtest: {name}: {state} in {took:.2f} s")

    def summary(self):
        lines = []
        for name, took, ok in self.subtests:
            lines.append(f"  {'ok    ' if ok else 'FAILED'} {took:8.2f} s  {name}")
        return "\n".join(lines)
