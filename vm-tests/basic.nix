# Story "basic": one erlmcp server, one client on the LAN.
# Script: vm-tests/scenarios/basic.py (shared with the local harness).
{ common }:

common.mkTest {
  story = "basic";
  nodes = {
    server = common.erlmcpNode;
    client = common.client;
  };
}
