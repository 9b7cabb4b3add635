# Story "failover": a primary and a hot standby in sync replication,
# keepalived moving the virtual IP 192.168.1.100 between them, a client on
# the virtual IP; the primary crashes, comes back, is cut off; the standby
# dies and returns (block, then degrade).
# Script: vm-tests/scenarios/failover.py (shared with the local harness,
# where failover.machines.json declares the same machines).
{ common }:

let
  # A test secret: in the store like the rest of the test. A real pair
  # keeps it outside (agenix, sops-nix, /run/keys).
  secret = "failover-story-shared-secret-0123456789\n";

  server = { role, peer, priority }: {
    imports = [ common.erlmcpNode ];
    services.erlmcp = {
      replication = {
        inherit role peer;
        mode = "sync";
        onStandbyLoss = "block";
        secretFile = "/etc/erlmcp/replication-secret";
      };
      failover = {
        enable = true;
        # eth1 is the test VLAN (eth0 is QEMU's user network).
        interface = "eth1";
        virtualIp = "192.168.1.100/24";
        inherit priority;
        advertInt = 0.5;
      };
    };
    # A copy, root-only (environment.etc with a mode is not a link into
    # the store), as the harness installs it.
    environment.etc."erlmcp/replication-secret" = {
      text = secret;
      mode = "0400";
    };
    # NixOS's firewall is on (the harness's machines have none): MCP and
    # the ops port are opened by common.erlmcpNode, VRRP by keepalived's
    # module (services.keepalived.openFirewall, set by failover.enable).
  };
in
common.mkTest {
  story = "failover";
  nodes = {
    primary = server { role = "primary"; peer = "standby:${toString common.opsPort}"; priority = 150; };
    standby = server { role = "standby"; peer = "primary:${toString common.opsPort}"; priority = 100; };
    client = common.client;
  };
}
