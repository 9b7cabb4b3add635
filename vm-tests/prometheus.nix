# Story "prometheus": Prometheus next to erlmcp with erlmcp's rules
# (services.erlmcp.prometheus.scrape: the job `erlmcp` on the ops listener
# and services.erlmcp.prometheus.rules in ruleFiles); the down alert fires
# while erlmcp is stopped and clears when it runs again, the backup alert
# fires while the backup directory is unwritable and clears after a good
# backup, each checked through Prometheus' HTTP API.
# Script: vm-tests/scenarios/prometheus.py (shared with the local harness).
{ common }:

common.mkTest {
  story = "prometheus";
  nodes = {
    server = {
      imports = [ common.erlmcpNode ];
      # As the harness's machines.json: a backup every 10 s.
      services.erlmcp.backups = {
        enable = true;
        schedule = "10s";
        retention.keepLast = 10;
      };
      services.erlmcp.prometheus.scrape = true;
      # Port 9090 on all addresses (the module's defaults); the intervals
      # (2 s) come from the machines.json through vm-tests/common.nix.
      services.prometheus.enable = true;
      virtualisation.diskSize = 2048;
    };
  };
}
