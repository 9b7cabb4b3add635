# The NixOS VM tests, one per story. Each runs the scenario script that the
# local harness also runs on Debian machines (vm-tests/scenarios/<story>.py,
# written against the NixOS test driver's machine API). A story is tested
# here once both its script and its ./<story>.nix exist.
# erlmcpNextPackage: the test build of a plausible next release (one more
# migration, a later version), for the upgrade-rollback story's
# specialisation "next".
{ pkgs, erlmcpModule, erlmcpPackage, erlmcpNextPackage ? null }:

let
  inherit (pkgs) lib;

  stories = [ "basic" "restore" "failover" "upgrade-rollback" "prometheus" ];

  ready = story:
    builtins.pathExists (./. + "/${story}.nix")
    && builtins.pathExists (./scenarios + "/${story}.py");

  common = import ./common.nix { inherit lib erlmcpModule erlmcpPackage erlmcpNextPackage; };

  test = story: pkgs.testers.runNixOSTest (import (./. + "/${story}.nix") { inherit common; });
in
lib.genAttrs (builtins.filter ready stories) test
