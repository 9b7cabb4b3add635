# Evaluation tests of services.erlmcp: types, defaults, the generated
# settings and units, and the assertions. They need nothing but nixpkgs'
# `lib`:
#
#   nix-instantiate --eval --strict --json nixos-modules/tests/eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib'
#
# By default the module is evaluated with lib.evalModules against the small
# option declarations of ./nixos-stub.nix (with nixpkgs' real module files
# where `nixosModules` has them: see there). The flake passes `evalNixos` (a
# full NixOS evaluation, lib.nixosSystem) so the same cases run against real
# NixOS in `nix flake check`. The result lists the failed expectations;
# empty is green.
#
# NixOS writes to many of the options this module writes to (tmpfiles
# rules, users, the firewall, packages): an expectation about what erlmcp
# adds to such an option reads `c.own PATH`, erlmcp's own definitions, never
# the merged value.
{ lib
, evalNixos ? null
, nixosModules ? null
}:

let
  inherit (lib) all any elem hasInfix hasPrefix hasSuffix mapAttrsToList;

  stub = import ./nixos-stub.nix { inherit lib nixosModules; };
  stubbed = evalNixos == null;

  # The merged config, plus `own PATH`: the values nixos-modules/erlmcp.nix
  # itself defines for the (list) option at PATH, concatenated.
  eval = modules:
    let
      system =
        if stubbed then
          lib.evalModules { modules = [ stub.module ../erlmcp.nix ] ++ modules; }
        else
          evalNixos ([ ../erlmcp.nix ] ++ modules);
      own = path: lib.concatMap (d: d.value)
        (builtins.filter (d: hasSuffix "/nixos-modules/erlmcp.nix" (toString d.file))
          (lib.getAttrFromPath path system.options).definitionsWithLocations);
    in
    system.config // { inherit own; };

  # The messages of this module's failed assertions.
  failedAssertions = config:
    builtins.filter (hasPrefix "services.erlmcp")
      (map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions));

  ownWarnings = config: builtins.filter (hasPrefix "services.erlmcp") config.warnings;

  # Does evaluating `f config` fail (type error, read-only, conflict)?
  fails = modules: f:
    !(builtins.tryEval (builtins.deepSeq (f (eval modules)) true)).success;

  enabled = extra: [{ services.erlmcp = { enable = true; } // extra; }];

  svc = config: config.systemd.services.erlmcp;
  sc = config: (svc config).serviceConfig;

  # A case: modules, and expectations { name = bool; } on the evaluated config.
  # Those of services.erlmcp.upgradeGuard (nixos-modules/upgrade-guard.nix)
  # are in ./upgrade-guard-cases.nix.
  cases = import ./upgrade-guard-cases.nix { inherit lib enabled failedAssertions stubbed; } // moduleCases;
  moduleCases = {
    defaults = {
      modules = enabled { } ++ [{ networking.hostName = "mcp1"; }];
      expect = c: {
        "settings are the documented defaults" = c.services.erlmcp.settings == {
          node_name = "mcp1";
          data_dir = "/var/lib/erlmcp";
          http.listen = "127.0.0.1:8080";
          ops.listen = "127.0.0.1:9718";
          shutdown.drain_timeout_secs = 30;
          backup = {
            enabled = false;
            dir = "/var/lib/erlmcp/backups";
            schedule = "hourly";
            keep_last = 3;
            hourly = 24;
            daily = 7;
            weekly = 4;
          };
        };
        "no assertion fails" = failedAssertions c == [ ];
        "no warning" = ownWarnings c == [ ];
        "Type=notify-reload" = (sc c).Type == "notify-reload";
        "ExecStart serves with the /etc config" = hasInfix "/bin/erlmcp serve --config /etc/erlmcp/erlmcp.toml" (sc c).ExecStart;
        "Restart=on-failure" = (sc c).Restart == "on-failure";
        "RestartPreventExitStatus=65 78" = (sc c).RestartPreventExitStatus == "65 78";
        "WatchdogSec=30s" = (sc c).WatchdogSec == "30s";
        "TimeoutStopSec = drain + 15s" = (sc c).TimeoutStopSec == "45s";
        "StateDirectory=erlmcp" = (sc c).StateDirectory == "erlmcp";
        "runs as erlmcp" = (sc c).User == "erlmcp" && c.users.users.erlmcp.isSystemUser;
        "ProtectSystem=strict" = (sc c).ProtectSystem == "strict";
        "no capabilities" = (sc c).CapabilityBoundingSet == [ "" ] && (sc c).AmbientCapabilities == [ "" ];
        "hardening flags" = all (k: (sc c).${k} == true) [
          "NoNewPrivileges"
          "PrivateTmp"
          "PrivateDevices"
          "PrivateUsers"
          "ProtectHome"
          "ProtectKernelTunables"
          "ProtectKernelModules"
          "ProtectControlGroups"
          "RestrictNamespaces"
          "RestrictSUIDSGID"
          "LockPersonality"
          "MemoryDenyWriteExecute"
        ];
        "SystemCallFilter @system-service" = elem "@system-service" (sc c).SystemCallFilter;
        "RestrictAddressFamilies" = (sc c).RestrictAddressFamilies == [ "AF_UNIX" "AF_INET" "AF_INET6" ];
        "no credentials" = (sc c).LoadCredential == [ ];
        "no TLS setting" = !(c.services.erlmcp.settings.http ? tls);
        "no network policy" = !((sc c) ? IPAddressAllow) && !((sc c) ? IPAddressDeny)
          && !(c.systemd.sockets.erlmcp.socketConfig ? IPAddressDeny)
          && !(c.systemd.sockets.erlmcp-ops.socketConfig ? IPAddressDeny);
        "socket mcp" = c.systemd.sockets.erlmcp.listenStreams == [ "127.0.0.1:8080" ]
          && c.systemd.sockets.erlmcp.socketConfig.FileDescriptorName == "mcp";
        "socket ops" = c.systemd.sockets.erlmcp-ops.listenStreams == [ "127.0.0.1:9718" ]
          && c.systemd.sockets.erlmcp-ops.socketConfig.FileDescriptorName == "ops"
          && c.systemd.sockets.erlmcp-ops.socketConfig.Service == "erlmcp.service";
        "service requires its sockets" = elem "erlmcp.socket" (svc c).requires && elem "erlmcp-ops.socket" (svc c).requires;
        "reload on config change" = (svc c).reloadTriggers != [ ];
        "config in /etc" = c.environment.etc ? "erlmcp/erlmcp.toml";
        "firewall closed" = c.own [ "networking" "firewall" "allowedTCPPorts" ] == [ ];
        "no tmpfiles rule" = c.own [ "systemd" "tmpfiles" "rules" ] == [ ];
        "the package on PATH" = c.own [ "environment" "systemPackages" ] == [ c.services.erlmcp.package ];
        "no keepalived" = !c.services.keepalived.enable;
        "no Prometheus scrape or rules" = c.own [ "services" "prometheus" "scrapeConfigs" ] == [ ]
          && c.own [ "services" "prometheus" "ruleFiles" ] == [ ];
        "the rules file is exposed" = builtins.pathExists c.services.erlmcp.prometheus.rules
          && hasSuffix "erlmcp.rules.yml" (toString c.services.erlmcp.prometheus.rules);
      } // lib.optionalAttrs stubbed {
        "config checked by erlmcp check-config" =
          hasInfix "erlmcp check-config" (builtins.readFile c.environment.etc."erlmcp/erlmcp.toml".source);
      };
    };

    disabled = {
      modules = [{ services.erlmcp.enable = false; }];
      expect = c: {
        "no service" = !(c.systemd.services ? erlmcp);
        "no socket" = !(c.systemd.sockets ? erlmcp);
        "no config file" = !(c.environment.etc ? "erlmcp/erlmcp.toml");
        "no user" = !(c.users.users ? erlmcp);
        "nothing of erlmcp's in merged options" = c.own [ "systemd" "tmpfiles" "rules" ] == [ ]
          && c.own [ "networking" "firewall" "allowedTCPPorts" ] == [ ]
          && c.own [ "environment" "systemPackages" ] == [ ];
        # True on NixOS, so the stub must write them too (nixos-stub.nix,
        # nixosOwn): merged values here then look as they do on NixOS.
        "NixOS's own tmpfiles rules" = c.systemd.tmpfiles.rules != [ ];
        "NixOS's own users and packages" = c.users.users ? root && c.environment.systemPackages != [ ];
      };
    };

    public-ipv6 = {
      modules = enabled {
        listenAddress = "::";
        port = 8443;
        openFirewall = true;
        ops = { listenAddress = "::"; openFirewall = true; };
        settings.log.level = "debug";
        settings.http.allowed_hosts = [ "mcp.example.org" ];
        settings.toolsets.files = {
          enabled = true;
          roots = [{ name = "docs"; path = "/srv/docs"; }];
        };
      };
      expect = c: {
        "IPv6 listen addresses in brackets" = c.services.erlmcp.settings.http.listen == "[::]:8443"
          && c.services.erlmcp.settings.ops.listen == "[::]:9718";
        "socket on [::]" = c.systemd.sockets.erlmcp.listenStreams == [ "[::]:8443" ];
        "firewall open" = c.own [ "networking" "firewall" "allowedTCPPorts" ] == [ 8443 9718 ];
        "freeform settings kept" = c.services.erlmcp.settings.log.level == "debug"
          && c.services.erlmcp.settings.http.allowed_hosts == [ "mcp.example.org" ]
          && c.services.erlmcp.settings.toolsets.files.roots == [{ name = "docs"; path = "/srv/docs"; }];
        "no assertion fails" = failedAssertions c == [ ];
      };
    };

    backups = {
      modules = enabled {
        backups = {
          enable = true;
          schedule = "6h";
          directory = "/srv/backups/erlmcp";
          retention = { keepLast = 5; hourly = 0; daily = 14; weekly = 8; };
        };
        settings.shutdown.drain_timeout_secs = 60;
      };
      expect = c: {
        "backup settings" = c.services.erlmcp.settings.backup == {
          enabled = true;
          dir = "/srv/backups/erlmcp";
          schedule = "6h";
          keep_last = 5;
          hourly = 0;
          daily = 14;
          weekly = 8;
        };
        "directory outside the state dir is created" = c.own [ "systemd" "tmpfiles" "rules" ] == [ "d /srv/backups/erlmcp 0750 erlmcp erlmcp - -" ];
        "and writable" = (sc c).ReadWritePaths == [ "/srv/backups/erlmcp" ];
        "TimeoutStopSec follows the drain timeout" = (sc c).TimeoutStopSec == "75s";
      };
    };

    # A Prometheus on the same machine scrapes the ops listener (on
    # loopback when it listens on every address) and loads the rules.
    prometheus-scrape = {
      modules = enabled {
        ops.listenAddress = "0.0.0.0";
        prometheus.scrape = true;
      };
      expect = c: {
        "the rules loaded" = c.own [ "services" "prometheus" "ruleFiles" ] == [ c.services.erlmcp.prometheus.rules ];
        "a job named erlmcp on loopback" = map (s: { inherit (s) job_name; targets = map (t: t.targets) s.static_configs; })
          (c.own [ "services" "prometheus" "scrapeConfigs" ]) == [{ job_name = "erlmcp"; targets = [ [ "127.0.0.1:9718" ] ]; }];
        "no assertion fails" = failedAssertions c == [ ];
      };
    };

    backups-in-state-dir = {
      modules = enabled { backups.enable = true; };
      expect = c: {
        "no extra directory" = c.own [ "systemd" "tmpfiles" "rules" ] == [ ] && (sc c).ReadWritePaths == [ ];
        "enabled" = c.services.erlmcp.settings.backup.enabled;
      };
    };

    credentials = {
      modules = enabled {
        credentialFiles."replication.token" = "/run/secrets/erlmcp-token";
        environmentFile = "/run/secrets/erlmcp.env";
      };
      expect = c: {
        "LoadCredential" = (sc c).LoadCredential == [ "replication.token:/run/secrets/erlmcp-token" ];
        "EnvironmentFile" = (sc c).EnvironmentFile == [ "/run/secrets/erlmcp.env" ];
        "started through the credential wrapper" = !(hasInfix "erlmcp serve" (sc c).ExecStart);
        "no assertion fails" = failedAssertions c == [ ];
      } // lib.optionalAttrs stubbed {
        "wrapper exports ERLMCP_REPLICATION__TOKEN" =
          let text = builtins.readFile (sc c).ExecStart; in
          (hasInfix ''ERLMCP_REPLICATION__TOKEN="$(<"$CREDENTIALS_DIRECTORY"/replication.token)"'' text
            || hasInfix ''ERLMCP_REPLICATION__TOKEN="$(<"$CREDENTIALS_DIRECTORY"/'replication.token')"'' text)
          && hasInfix "export ERLMCP_REPLICATION__TOKEN" text
          && hasInfix "exec /nix/store/" text
          && hasInfix "/bin/erlmcp serve --config /etc/erlmcp/erlmcp.toml" text;
      };
    };

    tls = {
      modules = enabled {
        tls = {
          enable = true;
          certificateFile = "/var/lib/acme/mcp/fullchain.pem";
          keyFile = "/var/lib/acme/mcp/key.pem";
        };
      };
      expect = c: {
        "no assertion fails" = failedAssertions c == [ ];
        "http.tls.enabled, the files by their credential names" =
          c.services.erlmcp.settings.http == { listen = "127.0.0.1:8080"; tls.enabled = true; };
        "certificate and key are credentials" =
          (sc c).LoadCredential == [ "tls-cert:/var/lib/acme/mcp/fullchain.pem" "tls-key:/var/lib/acme/mcp/key.pem" ];
        "the paths are not in the config" =
          !(hasInfix "/var/lib/acme" (builtins.toJSON c.services.erlmcp.settings));
        "turning TLS on or off restarts" = lib.any (hasInfix "\"http_tls_enabled\":true") (svc c).restartTriggers;
        "no wrapper needed" = hasInfix "/bin/erlmcp serve --config /etc/erlmcp/erlmcp.toml" (sc c).ExecStart;
      };
    };

    allowed-networks = {
      modules = enabled {
        listenAddress = "0.0.0.0";
        allowedNetworks = [ "10.0.0.0/8" "fd00::/8" "192.168.1.7" ];
      };
      expect = c:
        let
          allow = [ "localhost" "10.0.0.0/8" "fd00::/8" "192.168.1.7" ];
          policy = u: u.IPAddressAllow == allow && u.IPAddressDeny == "any";
        in
        {
          "no assertion fails" = failedAssertions c == [ ];
          "the service: loopback and the list, deny the rest" = policy (sc c);
          "the MCP socket too" = policy c.systemd.sockets.erlmcp.socketConfig;
          "the ops socket too" = policy c.systemd.sockets.erlmcp-ops.socketConfig;
        };
    };

    loopback-only = {
      modules = enabled { allowedNetworks = [ ]; socketActivation = false; };
      expect = c: {
        "no assertion fails" = failedAssertions c == [ ];
        "only loopback" = (sc c).IPAddressAllow == [ "localhost" ] && (sc c).IPAddressDeny == "any";
        "no sockets" = !(c.systemd.sockets ? erlmcp);
      };
    };

    failover = {
      modules = enabled {
        listenAddress = "0.0.0.0";
        ops.listenAddress = "0.0.0.0";
        replication = {
          role = "primary";
          peer = "standby:9718";
          secretFile = "/run/keys/erlmcp-replication";
        };
        failover = {
          enable = true;
          interface = "eth1";
          virtualIp = "192.168.1.100/24";
          virtualRouterId = 42;
          priority = 150;
        };
        settings.replication.ack_timeout_ms = 2000;
      };
      expect = c:
        let
          k = c.services.keepalived;
          i = k.vrrpInstances.erlmcp;
          s = k.vrrpScripts.erlmcp_ready;
        in
        {
          "no assertion fails" = failedAssertions c == [ ];
          "replication settings, with the settings' own keys" = c.services.erlmcp.settings.replication == {
            enabled = true;
            initial_role = "primary";
            peer = "standby:9718";
            mode = "sync";
            on_standby_loss = "block";
            ack_timeout_ms = 2000;
          };
          "the secret is a credential, not a setting" =
            (sc c).LoadCredential == [ "replication-secret:/run/keys/erlmcp-replication" ]
            && !(c.services.erlmcp.settings.replication ? secret_file);
          "no wrapper needed for it" = hasInfix "/bin/erlmcp serve --config /etc/erlmcp/erlmcp.toml" (sc c).ExecStart;
          "a replication change restarts" = lib.any (hasInfix "\"initial_role\":\"primary\"") (svc c).restartTriggers;
          "keepalived on, VRRP open" = k.enable && k.openFirewall && k.enableScriptSecurity;
          "instance" =
            i.interface == "eth1"
            && i.virtualRouterId == 42
            && i.priority == 150
            && i.state == "BACKUP"
            && i.noPreempt
            && i.trackScripts == [ "erlmcp_ready" ]
            && map (v: v.addr) i.virtualIps == [ "192.168.1.100/24" ];
          "VRRPv3, adverts every 0.5 s" = hasInfix "version 3\n" i.extraConfig && hasInfix "advert_int 0.5\n" i.extraConfig;
          "notify hooks run erlmcp role as erlmcp" =
            hasInfix "/bin/erlmcp role primary --config /etc/erlmcp/erlmcp.toml\" erlmcp erlmcp" i.extraConfig
            && hasInfix ''notify_master "'' i.extraConfig
            && hasInfix ''notify_fault "'' i.extraConfig
            && hasInfix "/bin/erlmcp role standby --config /etc/erlmcp/erlmcp.toml\" erlmcp erlmcp" i.extraConfig;
          "no hook on BACKUP" = !(hasInfix "notify_backup" i.extraConfig);
          "track script is erlmcp ready, as erlmcp" =
            hasInfix "/bin/erlmcp ready --config /etc/erlmcp/erlmcp.toml" s.script
            && s.user == "erlmcp" && s.group == "erlmcp"
            && s.interval == 1 && s.timeout == 3 && s.fall == 2 && s.rise == 2;
          "sockets may bind the virtual IP" = c.systemd.sockets.erlmcp.socketConfig.FreeBind;
        } // lib.optionalAttrs (!stubbed || stub.realKeepalived) {
          # What nixpkgs' keepalived module makes of these settings.
          "keepalived's own assertions hold" = builtins.filter (hasInfix "services.keepalived")
            (map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions)) == [ ];
          "VRRP allowed by keepalived's firewall rules" = hasInfix "-p vrrp" c.networking.firewall.extraCommands;
          "keepalived.service runs the generated config" =
            let conf = lib.last (lib.splitString " -f " c.systemd.services.keepalived.serviceConfig.ExecStart); in
            hasPrefix "/nix/store/" conf;
        } // lib.optionalAttrs (stubbed && stub.realKeepalived) {
          "keepalived.conf: instance, track script, notify hooks" =
            let
              conf = builtins.readFile (lib.head (lib.splitString " " (lib.last
                (lib.splitString " -f " c.systemd.services.keepalived.serviceConfig.ExecStart))));
            in
            hasInfix "vrrp_instance erlmcp {" conf
            && hasInfix "vrrp_script erlmcp_ready {" conf
            && hasInfix "user erlmcp erlmcp" conf
            && hasInfix "nopreempt" conf
            && hasInfix "virtual_router_id 42" conf
            && hasInfix "192.168.1.100/24" conf
            && hasInfix "advert_int 0.5" conf
            && hasInfix "notify_master \"" conf
            && hasInfix "enable_script_security" conf;
        };
    };

    standby-degrade = {
      modules = enabled {
        ops.listenAddress = "::";
        replication = {
          role = "standby";
          peer = "[fd00::1]:9718";
          mode = "async";
          onStandbyLoss = "degrade";
          secretFile = "/run/keys/erlmcp-replication";
        };
        failover = { enable = true; interface = "eth1"; virtualIp = "10.0.0.10/24"; advertInt = 1; };
        listenAddress = "::";
      };
      expect = c: {
        "no assertion fails" = failedAssertions c == [ ];
        "settings" = c.services.erlmcp.settings.replication == {
          enabled = true;
          initial_role = "standby";
          peer = "[fd00::1]:9718";
          mode = "async";
          on_standby_loss = "degrade";
        };
        "advert_int 1" = hasInfix "advert_int 1\n" c.services.keepalived.vrrpInstances.erlmcp.extraConfig;
        "default priority 100" = c.services.keepalived.vrrpInstances.erlmcp.priority == 100;
      };
    };

    replication-without-failover = {
      modules = enabled {
        ops = { listenAddress = "192.168.1.2"; openFirewall = true; };
        replication = { role = "primary"; peer = "192.168.1.3:9718"; secretFile = "/run/keys/s"; };
      };
      expect = c: {
        "no assertion fails" = failedAssertions c == [ ];
        "no keepalived" = !c.services.keepalived.enable;
        "ops port open for the peer" = c.own [ "networking" "firewall" "allowedTCPPorts" ] == [ 9718 ];
        "credential" = (sc c).LoadCredential == [ "replication-secret:/run/keys/s" ];
      };
    };

    single-node-replication-keys = {
      modules = enabled { };
      expect = c: {
        "no replication section" = !(c.services.erlmcp.settings ? replication);
      };
    };

    low-port-without-socket-activation = {
      modules = enabled { socketActivation = false; port = 443; };
      expect = c: {
        "no sockets" = !(c.systemd.sockets ? erlmcp);
        "may bind 443" = (sc c).CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ]
          && (sc c).AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ];
        "no socket dependency" = (svc c).requires == [ ];
      };
    };

    peer-without-role = {
      modules = enabled { replication.peer = "primary:9718"; };
      expect = c: {
        "warns" = ownWarnings c == [
          "services.erlmcp.replication.peer or secretFile is set but services.erlmcp.replication.role is null, so erlmcp does not replicate."
        ];
        "no assertion fails" = failedAssertions c == [ ];
        "no replication section" = !(c.services.erlmcp.settings ? replication);
        "no credential" = (sc c).LoadCredential == [ ];
      };
    };
  };

  # Impossible combinations: exactly these assertion messages.
  assertionCases =
    let
      pair = {
        ops.listenAddress = "0.0.0.0";
        replication = { role = "primary"; peer = "standby:9718"; secretFile = "/run/keys/s"; };
      };
      vip = { enable = true; interface = "eth1"; virtualIp = "192.168.1.100/24"; };
    in
    {
      failover-without-replication = {
        modules = enabled {
          listenAddress = "0.0.0.0";
          ops.listenAddress = "0.0.0.0";
          failover = vip;
        };
        messages = [
          "services.erlmcp.failover.enable needs services.erlmcp.replication.role: keepalived moves the virtual IP between a primary and a standby, so both nodes must replicate."
        ];
      };
      failover-without-vip = {
        modules = enabled (pair // { failover.enable = true; });
        messages = [
          "services.erlmcp.failover.enable needs services.erlmcp.failover.interface and services.erlmcp.failover.virtualIp."
        ];
      };
      failover-on-loopback = {
        modules = enabled (pair // { failover = vip; });
        messages = [
          "services.erlmcp.failover.enable: clients reach erlmcp at the virtual IP 192.168.1.100, but services.erlmcp.listenAddress is 127.0.0.1; listen on 0.0.0.0, :: or the virtual IP."
        ];
      };
      failover-with-ops-on-one-address = {
        modules = enabled (pair // { listenAddress = "0.0.0.0"; ops.listenAddress = "192.168.1.2"; failover = vip; });
        messages = [
          "services.erlmcp.failover.enable: keepalived's hooks change the role through the operations listener, which accepts that from loopback only, so services.erlmcp.ops.listenAddress must be 0.0.0.0 or :: (it is 192.168.1.2)."
        ];
      };
      replication-without-peer = {
        modules = enabled (pair // { replication = { role = "standby"; secretFile = "/run/keys/s"; }; });
        messages = [
          "services.erlmcp.replication.role needs services.erlmcp.replication.peer: the other node's operations listener (HOST:PORT)."
        ];
      };
      replication-without-secret = {
        modules = enabled (pair // { replication = { role = "primary"; peer = "standby:9718"; }; });
        messages = [
          "services.erlmcp.replication.role needs services.erlmcp.replication.secretFile: the pair's shared secret, passed to the service as a credential."
        ];
      };
      secret-in-the-store = {
        modules = enabled (pair // {
          replication = { role = "primary"; peer = "standby:9718"; secretFile = "/nix/store/00000000000000000000000000000000-secret"; };
        });
        messages = [
          "services.erlmcp.replication.secretFile is in the Nix store, which every user can read; keep the secret in a root-only file outside it (agenix, sops-nix, /run/keys, ...)."
        ];
      };
      replication-on-loopback = {
        modules = enabled { replication = pair.replication; };
        messages = [
          "services.erlmcp.replication.role: the peer connects to this node's operations listener, but services.erlmcp.ops.listenAddress is 127.0.0.1; listen on 0.0.0.0, :: or an address the peer reaches."
        ];
      };
      ports-clash = {
        modules = enabled { ops.port = 8080; };
        messages = [
          "services.erlmcp.port and services.erlmcp.ops.port are both 8080 on overlapping addresses; the MCP and operations listeners need different ports."
        ];
      };
      ports-on-different-addresses = {
        modules = enabled { listenAddress = "192.168.1.2"; ops = { listenAddress = "127.0.0.1"; port = 8080; }; };
        messages = [ ];
      };
      tls-without-files = {
        modules = enabled { tls = { enable = true; keyFile = "/run/keys/k"; }; };
        messages = [
          "services.erlmcp.tls.enable needs services.erlmcp.tls.certificateFile and services.erlmcp.tls.keyFile."
        ];
      };
      tls-key-in-the-store = {
        modules = enabled {
          tls = { enable = true; certificateFile = "/run/keys/c"; keyFile = "/nix/store/00000000000000000000000000000000-key.pem"; };
        };
        messages = [
          "services.erlmcp.tls.keyFile is in the Nix store, which every user can read; keep the key in a root-only file outside it."
        ];
      };
      bad-network = {
        modules = enabled { allowedNetworks = [ "10.0.0.0/8" "example.org" ]; };
        messages = [
          "services.erlmcp.allowedNetworks: entries are addresses with an optional prefix length (10.0.0.0/8, fd00::/8) or link-local, multicast, any; got: 10.0.0.0/8, example.org."
        ];
      };
      bad-credential-name = {
        modules = enabled { credentialFiles."Bad-Name" = "/run/secrets/x"; };
        messages = [
          "services.erlmcp.credentialFiles: names must be config keys such as \"replication.token\" (lower-case letters, digits, _ and dots); got: Bad-Name."
        ];
      };
    };

  # Definitions the module system must refuse.
  rejected = {
    "port out of range" = fails (enabled { port = 70000; }) (c: c.services.erlmcp.port);
    "allowedNetworks as one string" = fails (enabled { allowedNetworks = "10.0.0.0/8"; }) (c: c.services.erlmcp.allowedNetworks);
    "unknown replication role" = fails (enabled { replication.role = "leader"; }) (c: c.services.erlmcp.replication.role);
    "VRRP priority 255" = fails (enabled { failover.priority = 255; }) (c: c.services.erlmcp.failover.priority);
    "advert interval 0" = fails (enabled { failover.advertInt = 0; }) (c: c.services.erlmcp.failover.advertInt);
    "a secret file as a Nix path (copied into the store)" =
      fails (enabled { replication.secretFile = /run/keys/erlmcp-replication; }) (c: c.services.erlmcp.replication.secretFile);
    "unknown standby-loss policy" = fails (enabled { replication.onStandbyLoss = "wait"; }) (c: c.services.erlmcp.replication.onStandbyLoss);
    "keepLast 0" = fails (enabled { backups.retention.keepLast = 0; }) (c: c.services.erlmcp.backups.retention.keepLast);
    "the rules file is read-only" = fails (enabled { prometheus.rules = ./eval.nix; }) (c: c.services.erlmcp.prometheus.rules);
    "data_dir is read-only" = fails (enabled { settings.data_dir = "/srv/erlmcp"; }) (c: c.services.erlmcp.settings.data_dir);
    "http.listen belongs to listenAddress/port" = fails (enabled { settings.http.listen = "0.0.0.0:1"; }) (c: c.services.erlmcp.settings.http.listen);
    "TOML has no null" = fails (enabled { settings.log.level = null; }) (c: c.services.erlmcp.settings);
  };

  caseFailures = lib.concatLists (mapAttrsToList
    (name: case:
      let got = case.expect (eval case.modules); in
      map (what: "${name}: ${what}") (builtins.filter (what: !got.${what}) (builtins.attrNames got)))
    cases);

  assertionFailures = lib.concatLists (mapAttrsToList
    (name: case:
      let got = failedAssertions (eval case.modules); in
      lib.optional (got != case.messages)
        "${name}: failed assertions ${builtins.toJSON got}, expected ${builtins.toJSON case.messages}")
    assertionCases);

  rejectionFailures = map (what: "accepted but must be rejected: ${what}")
    (builtins.filter (what: !rejected.${what}) (builtins.attrNames rejected));

  count = set: builtins.length (builtins.attrNames set);
in
{
  evaluatedWith =
    if stubbed then
      "lib.evalModules + nixos-stub.nix" + lib.optionalString stub.realKeepalived " + nixpkgs' keepalived module"
    else "NixOS";
  checks = lib.foldl' (n: case: n + count (case.expect (eval case.modules))) 0 (builtins.attrValues cases)
    + count assertionCases + count rejected;
  failures = caseFailures ++ assertionFailures ++ rejectionFailures;
  ok = !(any (_: true) (caseFailures ++ assertionFailures ++ rejectionFailures));
}
