# services.erlmcp.upgradeGuard: the NixOS side of upgrades that roll back by
# themselves (docs/operations/upgrades.md). A switch that changes erlmcp's
# package restarts erlmcp-upgrade-guard.service (its command line names the
# package); the guard waits for the new release to be confirmed (its
# probation, `upgrade.probation_secs`) and, when it is not within the
# deadline (the service failed, crash-looped, or never became ready), leaves
# the reason for the previous release and switches the system back to the
# configuration that ran before. The previous release then takes the data
# back with the recorded down steps by itself. The guard also runs at boot,
# so an upgrade a crash interrupted is finished or rolled back.
#
# Which configuration ran before a switch: a pre-switch check records
# /run/current-system (still the old system then) for switches and tests;
# without it (NIXOS_NO_CHECK=1, a boot into a new generation) the guard
# goes back to the last configuration erlmcp was confirmed on.
# The script: ./erlmcp-upgrade-guard.sh.
{ config
, lib
, pkgs
, ...
}:

let
  inherit (lib) hasInfix literalExpression mkIf mkOption optional types;

  cfg = config.services.erlmcp;
  guard = cfg.upgradeGuard;

  # As erlmcp.nix: the address local tools use to reach the ops listener.
  hostPort = addr: port:
    if hasInfix ":" addr then "[${addr}]:${toString port}" else "${addr}:${toString port}";
  localAddr = addr:
    if addr == "0.0.0.0" then "127.0.0.1" else if addr == "::" then "::1" else addr;
  opsUrl = "http://${hostPort (localAddr cfg.ops.listenAddress) cfg.ops.port}";

  probation = cfg.settings.upgrade.probation_secs or 30;

  beforeDir = "/run/erlmcp-upgrade-guard";

  guardScript = pkgs.writeShellScript "erlmcp-upgrade-guard" (builtins.readFile ./erlmcp-upgrade-guard.sh);
in
{
  options.services.erlmcp.upgradeGuard = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether a switch that changes erlmcp's package is guarded: the new
        release must be confirmed (ready and healthy for
        `settings.upgrade.probation_secs`) within
        {option}`services.erlmcp.upgradeGuard.deadline`, or the whole
        system is switched back to the configuration that ran before
        (`switch-to-configuration test`, or `switch` after setting the
        system profile back when it points at the failed configuration),
        and the previous release takes the data back by itself. The
        verdict is in `/var/lib/erlmcp-upgrade-guard/last.json` and the
        journal of `erlmcp-upgrade-guard.service`.
      '';
    };

    deadline = mkOption {
      type = types.ints.positive;
      default = cfg.settings.upgrade.deadline_secs or 180;
      defaultText = literalExpression "config.services.erlmcp.settings.upgrade.deadline_secs or 180";
      description = ''
        Seconds a new release has, from the switch, to be confirmed before
        the guard switches the system back. Longer than
        `settings.upgrade.probation_secs` (default 30).
      '';
    };
  };

  config = mkIf (cfg.enable && guard.enable) {
    assertions = [{
      assertion = guard.deadline > probation;
      message = "services.erlmcp.upgradeGuard.deadline (${toString guard.deadline} s) must be longer than settings.upgrade.probation_secs (${toString probation} s): a new release could never be confirmed in time.";
    }];

    systemd.services.erlmcp-upgrade-guard = {
      description = "erlmcp upgrade guard: confirm a new release or switch the system back";
      wantedBy = [ "multi-user.target" ];
      after = [ "erlmcp.service" ];
      path = [ pkgs.curl pkgs.jq ] ++ optional config.nix.enable config.nix.package;
      environment = {
        ERLMCP_GUARD_OPS = opsUrl;
        ERLMCP_GUARD_DATA = cfg.settings.data_dir;
        ERLMCP_GUARD_DEADLINE = toString guard.deadline;
        ERLMCP_GUARD_UNIT = "erlmcp.service";
        ERLMCP_GUARD_STATE = "/var/lib/erlmcp-upgrade-guard";
        ERLMCP_GUARD_BEFORE = "${beforeDir}/before";
      };
      serviceConfig = {
        # Started, not waited for: switch-to-configuration must not block
        # on it (the switch back is a switch of its own). It stays active
        # after its verdict, so a switch that changes the package (the
        # command line below) restarts it.
        Type = "exec";
        RemainAfterExit = true;
        ExecStart = "${guardScript} ${lib.getExe cfg.package}";
        StateDirectory = "erlmcp-upgrade-guard";
        StateDirectoryMode = "0700";
        # Root: it switches the system and writes erlmcp's upgrade.json.
      };
    };

    # Runs before every switch with the new system and the action; the
    # running system is still the old one.
    system.preSwitchChecks.erlmcp-upgrade-guard = ''
      case "$2" in
        switch|test)
          ${pkgs.coreutils}/bin/mkdir -p ${beforeDir}
          ${pkgs.coreutils}/bin/readlink -f /run/current-system > ${beforeDir}/before || true
          ;;
      esac
    '';
  };
}
