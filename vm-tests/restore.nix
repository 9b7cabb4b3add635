# Story "restore": backups taken on a schedule and on demand, verified, and
# restored (latest, or by id) on the same server.
# Script: vm-tests/scenarios/restore.py (shared with the local harness).
{ common }:

common.mkTest {
  story = "restore";
  nodes = {
    server = {
      imports = [ common.erlmcpNode ];
      services.erlmcp.backups = {
        enable = true;
        schedule = "hourly";
      };
      # Room for the database, its backups and the pre-restore copy.
      virtualisation.diskSize = 2048;
    };
    client = common.client;
  };
}
