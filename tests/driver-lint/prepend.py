# Type hints of the globals the NixOS test driver gives a test script, put in
# front of every story before mypy runs, as nixos/lib/testing/driver.nix does
# with nixos/lib/test-script-prepend.py. Only the globals both drivers (NixOS
# and vm-tests/harness) provide are declared, so a story using any other one
# fails here instead of on one of them.
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol
from unittest import TestCase

from test_driver.driver import Driver
from test_driver.logger import Logger
from test_driver.machine import Machine, QemuMachine  # noqa: F401 (machine hints below)
from test_driver.vlan import VLan  # noqa: F401 (the vlan hints below)


class RetryProtocol(Protocol):
    # Positional only: the driver's parameter is `timeout_seconds`, while its
    # own type hints call it `timeout`; either keyword breaks one of them.
    def __call__(self, fn: Callable[[bool], bool], timeout_seconds: int = 900, /) -> None: ...


start_all: Callable[[], None]
join_all: Callable[[], None]
subtest: Callable[[str], AbstractContextManager[None]]
retry: RetryProtocol
driver: Driver
log: Logger
t: TestCase
