"""Exceptions the harness raises.

`RequestedAssertionFailed` carries the name the NixOS test driver uses for a
failed assertion in a scenario (a command that should have succeeded, a unit
that never came up), so a story's `except` clauses read the same under both.
`HarnessError` is everything else: the machinery could not do its job (a tool
is missing, a machine would not boot).  Both end a run with a non-zero exit.
"""


class HarnessError(Exception):
    """The harness itself failed (setup, backend, clean-up)."""


class MachineError(HarnessError):
    """A machine could not be started, reached or stopped."""


class RequestedAssertionFailed(AssertionError):
    """A scenario's assertion failed (named like the NixOS driver's)."""
