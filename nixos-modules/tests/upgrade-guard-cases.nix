# Evaluation cases of services.erlmcp.upgradeGuard
# (nixos-modules/upgrade-guard.nix), in the form of ./eval.nix's `cases`,
# which merges them.
{ lib
, enabled
, failedAssertions
, stubbed
}:

let
  inherit (lib) any elem hasInfix hasPrefix hasSuffix;

  guard = c: c.systemd.services.erlmcp-upgrade-guard;
  gsc = c: (guard c).serviceConfig;
  env = c: (guard c).environment;
  onPath = c: prefix: any (p: hasPrefix prefix (p.name or "")) (guard c).path;
  deadlineMessage = "services.erlmcp.upgradeGuard.deadline (60 s) must be longer than settings.upgrade.probation_secs (60 s): a new release could never be confirmed in time.";
in
{
  upgrade-guard-defaults = {
    modules = enabled { };
    expect = c: {
      "runs at boot, after erlmcp" = elem "multi-user.target" (guard c).wantedBy
        && elem "erlmcp.service" (guard c).after;
      "its command line names the package (a switch that changes it restarts the guard)" =
        hasSuffix " ${lib.getExe c.services.erlmcp.package}" (gsc c).ExecStart;
      "started, not waited for, and active after its verdict" =
        (gsc c).Type == "exec" && (gsc c).RemainAfterExit;
      "its own state directory" = (gsc c).StateDirectory == "erlmcp-upgrade-guard"
        && (env c).ERLMCP_GUARD_STATE == "/var/lib/erlmcp-upgrade-guard";
      "deadline 180 s" = (env c).ERLMCP_GUARD_DEADLINE == "180";
      "asks the ops listener" = (env c).ERLMCP_GUARD_OPS == "http://127.0.0.1:9718";
      "leaves the reason in erlmcp's data directory" = (env c).ERLMCP_GUARD_DATA == "/var/lib/erlmcp";
      "watches erlmcp.service" = (env c).ERLMCP_GUARD_UNIT == "erlmcp.service";
      "curl, jq and nix-env on its PATH" = onPath c "curl-" && onPath c "jq-" && onPath c "nix-";
      "a pre-switch check records the running system for switch and test" =
        let check = c.system.preSwitchChecks.erlmcp-upgrade-guard; in
        hasInfix "switch|test)" check
          && hasInfix "readlink -f /run/current-system > /run/erlmcp-upgrade-guard/before" check;
      "no assertion fails" = failedAssertions c == [ ];
    } // lib.optionalAttrs stubbed {
      "the script is erlmcp-upgrade-guard.sh" =
        hasInfix "erlmcp-upgrade-guard EXE" (builtins.readFile (lib.head (lib.splitString " " (gsc c).ExecStart)));
    };
  };

  upgrade-guard-follows-settings = {
    modules = enabled {
      ops = { listenAddress = "0.0.0.0"; port = 9800; };
      settings.upgrade = { probation_secs = 5; deadline_secs = 40; };
    };
    expect = c: {
      "deadline from upgrade.deadline_secs" = (env c).ERLMCP_GUARD_DEADLINE == "40";
      "ops listener on 0.0.0.0 asked on loopback" = (env c).ERLMCP_GUARD_OPS == "http://127.0.0.1:9800";
      "no assertion fails" = failedAssertions c == [ ];
    };
  };

  upgrade-guard-own-deadline = {
    modules = enabled { upgradeGuard.deadline = 600; ops.listenAddress = "::1"; };
    expect = c: {
      "deadline from the option" = (env c).ERLMCP_GUARD_DEADLINE == "600";
      "IPv6 ops listener in brackets" = (env c).ERLMCP_GUARD_OPS == "http://[::1]:9718";
    };
  };

  upgrade-guard-deadline-too-short = {
    modules = enabled { settings.upgrade.probation_secs = 60; upgradeGuard.deadline = 60; };
    expect = c: {
      "refused: the release could never be confirmed" = failedAssertions c == [ deadlineMessage ];
    };
  };

  upgrade-guard-off = {
    modules = enabled { upgradeGuard.enable = false; };
    expect = c: {
      "no guard unit" = !(c.systemd.services ? erlmcp-upgrade-guard);
      "no pre-switch check" = !(c.system.preSwitchChecks ? erlmcp-upgrade-guard);
      "erlmcp itself unchanged" = c.systemd.services ? erlmcp;
    };
  };

  upgrade-guard-without-erlmcp = {
    modules = [{ services.erlmcp.enable = false; }];
    expect = c: {
      "no guard unit" = !(c.systemd.services ? erlmcp-upgrade-guard);
      "no pre-switch check" = !(c.system.preSwitchChecks ? erlmcp-upgrade-guard);
    };
  };
}
