# Type stubs of the NixOS test driver (nixos/lib/test-driver, package
# `test_driver`) for tests/driver-lint: the part of its API that both the
# NixOS driver and the local harness (vm-tests/harness) implement. A story
# that calls anything else fails the lint, because one of the two drivers
# cannot run it.
