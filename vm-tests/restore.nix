# Story "restore": a scheduled backup holds the acknowledged writes; the
# database is lost; `restore latest` skips a corrupted newer backup and
# brings back exactly what the good one held.
# Script: vm-tests/scenarios/restore.py (shared with the local harness).
{ common }:

common.mkTest {
  story = "restore";
  nodes = {
    server = {
      imports = [ common.erlmcpNode ];
      # As the harness's machines.json: a backup every 10 s.
      services.erlmcp.backups = {
        enable = true;
        schedule = "10s";
        retention.keepLast = 10;
      };
      # Room for the database, its backups and the pre-restore copy.
      virtualisation.diskSize = 2048;
    };
    client = common.client;
  };
}
