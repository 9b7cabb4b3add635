# Story "basic": one erlmcp server, one client on the LAN.
# Script: vm-tests/scenarios/basic.py (shared with the local harness).
{ common }:

common.mkTest {
  story = "basic";
  nodes = {
    server = { lib, ... }: {
      imports = [ common.erlmcpNode ];
      # As the harness's drop-in: a short watchdog for the hung-process subtest.
      systemd.services.erlmcp.serviceConfig.WatchdogSec = lib.mkForce "6s";
    };
    client = common.client;
  };
}
