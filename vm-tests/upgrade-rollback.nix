# Story "upgrade-rollback": a good upgrade confirmed after its probation, a
# bad one (never ready) switched back by the upgrade guard with every
# acknowledged write kept, and crashes in the middle of a migration and of
# a rollback. The two releases are the base configuration (this build) and
# its specialisation "next" (the test build of the next release, one more
# migration; vm-tests/common.nix makes it from "releases" in
# scenarios/upgrade-rollback.machines.json, where the harness lays the same
# two releases out for `erlmcp upgrade apply`).
# Script: vm-tests/scenarios/upgrade-rollback.py (shared with the local harness).
{ common }:

common.mkTest {
  story = "upgrade-rollback";
  nodes = {
    server = {
      imports = [ common.erlmcpNode ];
      # The guard's deadline follows settings.upgrade.deadline_secs (the
      # machines.json's 20 s), as `erlmcp upgrade apply` reads it there.
      services.erlmcp.upgradeGuard.enable = true;
      # The database, and a restore point per schema change.
      virtualisation.diskSize = 2048;
    };
    client = common.client;
  };
}
