# services.erlmcp: the erlmcp MCP server as a hardened, socket-activated
# systemd service, with scheduled backups. Replication and keepalived
# failover are declared here already; an assertion refuses them until the
# binary has them (see `assertions`).
#
# The configuration file is generated from `settings` (RFC 42) and checked at
# build time with `erlmcp check-config`, which rejects unknown keys: the module
# only writes keys erlmcp knows. Secrets never enter the Nix store: they come
# from `credentialFiles` (systemd LoadCredential) or `environmentFile`.
{ config
, lib
, pkgs
, ...
}:

let
  inherit (lib)
    concatMapStringsSep
    concatStringsSep
    escapeShellArg
    filterAttrs
    hasInfix
    hasPrefix
    head
    literalExpression
    mapAttrsToList
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionalAttrs
    optionals
    splitString
    toUpper
    types
    ;

  cfg = config.services.erlmcp;

  settingsFormat = pkgs.formats.toml { };

  # Where erlmcp keeps its database: systemd's StateDirectory=erlmcp.
  stateDir = "/var/lib/erlmcp";
  configPath = "/etc/erlmcp/erlmcp.toml";

  # "ADDR:PORT" as erlmcp and systemd's ListenStream= read it.
  hostPort = addr: port:
    if hasInfix ":" addr then "[${addr}]:${toString port}" else "${addr}:${toString port}";

  isWildcard = addr: addr == "0.0.0.0" || addr == "::";

  # The address local tools (the keepalived check) use to reach a listener.
  localAddr = addr:
    if addr == "0.0.0.0" then "127.0.0.1" else if addr == "::" then "::1" else addr;

  mcpListen = hostPort cfg.listenAddress cfg.port;
  opsListen = hostPort cfg.ops.listenAddress cfg.ops.port;
  opsUrl = "http://${hostPort (localAddr cfg.ops.listenAddress) cfg.ops.port}";

  # The virtual IP without its prefix length ("192.168.1.100/24" -> "192.168.1.100").
  vipAddress = if cfg.failover.virtualIp == null then null else head (splitString "/" cfg.failover.virtualIp);

  rawConfigFile = settingsFormat.generate "erlmcp.toml" cfg.settings;

  # The file erlmcp reads, validated by the binary that will read it.
  configFile =
    if cfg.validateConfig then
      pkgs.runCommand "erlmcp.toml"
        {
          nativeBuildInputs = [ cfg.package ];
          preferLocalBuild = true;
        }
        ''
          erlmcp check-config ${rawConfigFile}
          cp ${rawConfigFile} $out
        ''
    else
      rawConfigFile;

  exe = lib.getExe cfg.package;
  serveCommand = "${exe} serve --config ${configPath}";

  # A credential "section.key" becomes the environment override
  # ERLMCP_SECTION__KEY, read from $CREDENTIALS_DIRECTORY at start.
  credentialEnvName = name: "ERLMCP_" + toUpper (lib.replaceStrings [ "." ] [ "__" ] name);
  credentialNameValid = name: builtins.match "[a-z0-9_]+(\\.[a-z0-9_]+)*" name != null;

  startScript = pkgs.writeShellScript "erlmcp-start" ''
    set -eu
    ${concatStringsSep "\n" (mapAttrsToList (name: _: ''
      ${credentialEnvName name}="$(<"$CREDENTIALS_DIRECTORY"/${escapeShellArg name})"
      export ${credentialEnvName name}
    '') cfg.credentialFiles)}
    exec ${serveCommand}
  '';

  backupDirOutsideState = !(hasPrefix "${stateDir}/" "${cfg.backups.directory}/");

  lowPorts = !cfg.socketActivation && (cfg.port < 1024 || cfg.ops.port < 1024);

  checkScript = pkgs.writeShellScript "erlmcp-keepalived-check" ''
    exec ${lib.getExe pkgs.curl} --fail --silent --show-error --output /dev/null \
      --max-time ${toString cfg.failover.checkTimeout} ${opsUrl}/healthz
  '';

  notifyLine = event: role:
    ''notify_${event} "${exe} role ${role} --config ${configPath}" erlmcp erlmcp'';

  sameListener =
    cfg.port == cfg.ops.port
    && (cfg.listenAddress == cfg.ops.listenAddress || isWildcard cfg.listenAddress || isWildcard cfg.ops.listenAddress);
in
{
  options.services.erlmcp = {
    enable = mkEnableOption "erlmcp, a Model Context Protocol server built to be operated";

    package = mkPackageOption pkgs "erlmcp" {
      extraDescription = ''
        The flake's `nixosModules.default` sets this to the package the flake
        builds; without it, add the flake's `overlays.default` so that
        `pkgs.erlmcp` exists.
      '';
    };

    listenAddress = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address of the MCP listener (Streamable HTTP on `/mcp`). Use
        `0.0.0.0` or `::` to serve other machines, together with
        {option}`services.erlmcp.openFirewall` and
        `settings.http.allowed_hosts` for the host names clients use.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 8080;
      description = "TCP port of the MCP listener.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open {option}`services.erlmcp.port` in the firewall.";
    };

    ops = {
      listenAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = ''
          Address of the operations listener (`/healthz`, `/readyz`,
          `/metrics`). It is never the public MCP listener; keep it on
          loopback unless a monitoring system or a replication peer must
          reach it.
        '';
      };

      port = mkOption {
        type = types.port;
        default = 9718;
        description = "TCP port of the operations listener.";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Whether to open {option}`services.erlmcp.ops.port` in the firewall.";
      };
    };

    socketActivation = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether systemd binds the MCP and operations listeners
        (`erlmcp.socket`, `erlmcp-ops.socket`) and passes them to erlmcp
        with `LISTEN_FDNAMES` `mcp` and `ops`. The sockets stay open while
        the service restarts, so no connection is refused, and ports below
        1024 need no capability.
      '';
    };

    settings = mkOption {
      default = { };
      description = ''
        erlmcp configuration, written to `/etc/erlmcp/erlmcp.toml`. See
        `docs/configuration.md` for every key. erlmcp rejects unknown keys,
        and the file is checked with `erlmcp check-config` when it is built.

        `data_dir`, `http.listen`, `ops.listen`, `backup.*` and
        `replication.*` are set from the dedicated options of this module;
        do not set them here. The file is world-readable in the Nix store:
        put secrets in {option}`services.erlmcp.credentialFiles` or
        {option}`services.erlmcp.environmentFile`.
      '';
      example = literalExpression ''
        {
          log.level = "debug";
          http.allowed_hosts = [ "mcp.example.org" ];
          toolsets.files = {
            enabled = true;
            roots = [ { name = "docs"; path = "/srv/docs"; } ];
          };
        }
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          node_name = mkOption {
            type = types.str;
            default = config.networking.hostName;
            defaultText = literalExpression "config.networking.hostName";
            description = "This node's name in logs and in backup manifests.";
          };

          data_dir = mkOption {
            type = types.str;
            readOnly = true;
            description = ''
              Where the database lives: the service's
              `StateDirectory` (`${stateDir}`). Set by the module, so that
              command-line tools run with `--config` find the same data.
            '';
          };

          shutdown.drain_timeout_secs = mkOption {
            type = types.ints.positive;
            default = 30;
            description = ''
              How long a stopping erlmcp lets open requests finish. The unit's
              `TimeoutStopSec` is this plus 15 seconds.
            '';
          };
        };
      };
    };

    credentialFiles = mkOption {
      type = types.attrsOf types.path;
      default = { };
      example = {
        "replication.token" = "/run/secrets/erlmcp-replication-token";
      };
      description = ''
        Secrets passed with systemd's `LoadCredential`, named by the config
        key they set: the credential `section.key` is read from
        `$CREDENTIALS_DIRECTORY` when the service starts and exported as the
        override `ERLMCP_SECTION__KEY`. The files stay outside the Nix store
        and may be readable by root only. Give paths as strings: a Nix path
        literal would be copied into the store.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/erlmcp.env";
      description = ''
        A file of `ERLMCP_SECTION__KEY=value` lines (systemd's
        `EnvironmentFile`), read by systemd as root before the service
        starts; use it for secrets. Overrides win over the config file.
      '';
    };

    validateConfig = mkOption {
      type = types.bool;
      default = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
      defaultText = literalExpression "pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform";
      description = ''
        Whether to check the generated configuration with
        `erlmcp check-config` at build time.
      '';
    };

    backups = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether erlmcp takes scheduled online backups (SQLite backup API,
          zstd, a manifest with SHA-256, verified after writing). Restore
          with `erlmcp restore ID|latest`.
        '';
      };

      schedule = mkOption {
        type = types.str;
        default = "hourly";
        example = "6h";
        description = ''
          When to take a backup: `"hourly"`, `"daily"`, or an interval such
          as `"15m"` or `"6h"`. erlmcp runs the schedule itself.
        '';
      };

      directory = mkOption {
        type = types.path;
        default = "${stateDir}/backups";
        defaultText = literalExpression ''"/var/lib/erlmcp/backups"'';
        example = "/srv/backups/erlmcp";
        description = ''
          Where backups are written. A directory outside
          `${stateDir}` is created (owned by `erlmcp`) and made writable
          to the service. Another disk is better than the data disk.
        '';
      };

      retention = {
        keepLast = mkOption {
          type = types.ints.positive;
          default = 3;
          description = "How many of the most recent backups are always kept.";
        };
        hourly = mkOption {
          type = types.ints.unsigned;
          default = 24;
          description = "How many hourly backups are kept (the newest of each hour).";
        };
        daily = mkOption {
          type = types.ints.unsigned;
          default = 7;
          description = "How many daily backups are kept (the newest of each day).";
        };
        weekly = mkOption {
          type = types.ints.unsigned;
          default = 4;
          description = "How many weekly backups are kept (the newest of each week).";
        };
      };
    };

    replication = {
      role = mkOption {
        type = types.nullOr (types.enum [ "primary" "standby" ]);
        default = null;
        example = "primary";
        description = ''
          This node's role in a primary/hot-standby pair, or `null` for a
          single node. With {option}`services.erlmcp.failover.enable`,
          keepalived changes the role at run time (`erlmcp role
          primary|standby`); this is the role a node starts in.
        '';
      };

      peer = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://primary:9718";
        description = ''
          The other node of the pair: where a standby pulls changes from,
          and the standby a primary waits for in `sync` mode.
        '';
      };

      mode = mkOption {
        type = types.enum [ "async" "sync" ];
        default = "async";
        description = ''
          `async`: a write is acknowledged once it is durable on the
          primary. `sync`: only once the standby has it too (no data lost
          on failover, at the cost of latency and of writes stalling while
          the standby is away).
        '';
      };
    };

    failover = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether keepalived (VRRP) moves a virtual IP to the healthy node of
          the pair. erlmcp's health endpoint is keepalived's check script, and
          keepalived's notify hooks run `erlmcp role primary|standby`. Both
          nodes start as `BACKUP` without preemption; the higher
          {option}`services.erlmcp.failover.priority` wins the first
          election. Further keepalived settings can be added under
          `services.keepalived.vrrpInstances.erlmcp`.
        '';
      };

      interface = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "eth1";
        description = "Network interface that carries VRRP and the virtual IP.";
      };

      virtualIp = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "192.168.1.100/24";
        description = "The virtual IP clients connect to, with its prefix length.";
      };

      virtualRouterId = mkOption {
        type = types.ints.between 1 255;
        default = 51;
        description = "VRRP router id, the same on both nodes and unique on the network.";
      };

      priority = mkOption {
        type = types.ints.between 1 254;
        default = 100;
        description = "VRRP priority; give the preferred primary the higher value.";
      };

      checkInterval = mkOption {
        type = types.ints.positive;
        default = 2;
        description = "Seconds between two runs of the health check.";
      };

      checkTimeout = mkOption {
        type = types.ints.positive;
        default = 2;
        description = "Seconds after which one health check counts as failed.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          # The options exist so configurations can be written against the
          # interface; the binary gains [replication] and `erlmcp role` with
          # the replication work, and then this assertion goes.
          assertion = cfg.replication.role == null && !cfg.failover.enable;
          message = "services.erlmcp.replication and services.erlmcp.failover are not available yet: this erlmcp (${cfg.package.version or "current"}) has no replication; leave replication.role null and failover.enable false.";
        }
        {
          assertion = !cfg.failover.enable || cfg.replication.role != null;
          message = "services.erlmcp.failover.enable needs services.erlmcp.replication.role: keepalived moves the virtual IP between a primary and a standby, so both nodes must replicate.";
        }
        {
          assertion = !cfg.failover.enable || (cfg.failover.interface != null && cfg.failover.virtualIp != null);
          message = "services.erlmcp.failover.enable needs services.erlmcp.failover.interface and services.erlmcp.failover.virtualIp.";
        }
        {
          assertion = cfg.replication.role != "standby" || cfg.replication.peer != null;
          message = "services.erlmcp.replication.role = \"standby\" needs services.erlmcp.replication.peer: the primary a standby pulls from.";
        }
        {
          assertion = cfg.replication.mode != "sync" || cfg.replication.peer != null;
          message = "services.erlmcp.replication.mode = \"sync\" needs services.erlmcp.replication.peer: a synchronous write waits for the standby, so it must be named.";
        }
        {
          assertion = cfg.replication.mode != "sync" || cfg.replication.role != null;
          message = "services.erlmcp.replication.mode = \"sync\" needs services.erlmcp.replication.role.";
        }
        {
          assertion = !cfg.failover.enable || vipAddress == null || isWildcard cfg.listenAddress || cfg.listenAddress == vipAddress;
          message = "services.erlmcp.failover.enable: clients reach erlmcp at the virtual IP ${toString vipAddress}, but services.erlmcp.listenAddress is ${cfg.listenAddress}; listen on 0.0.0.0, :: or the virtual IP.";
        }
        {
          assertion = !sameListener;
          message = "services.erlmcp.port and services.erlmcp.ops.port are both ${toString cfg.port} on overlapping addresses; the MCP and operations listeners need different ports.";
        }
        {
          assertion = lib.all credentialNameValid (lib.attrNames cfg.credentialFiles);
          message = "services.erlmcp.credentialFiles: names must be config keys such as \"replication.token\" (lower-case letters, digits, _ and dots); got: ${concatStringsSep ", " (lib.attrNames cfg.credentialFiles)}.";
        }
      ];

      warnings =
        optional (cfg.replication.role == null && cfg.replication.peer != null)
          "services.erlmcp.replication.peer is set but services.erlmcp.replication.role is null, so erlmcp does not replicate.";

      services.erlmcp.settings = {
        data_dir = stateDir;
        http.listen = mcpListen;
        ops.listen = opsListen;
        backup = {
          enabled = cfg.backups.enable;
          dir = cfg.backups.directory;
          inherit (cfg.backups) schedule;
          keep_last = cfg.backups.retention.keepLast;
          inherit (cfg.backups.retention) hourly daily weekly;
        };
      } // optionalAttrs (cfg.replication.role != null) {
        replication = filterAttrs (_: v: v != null) {
          inherit (cfg.replication) role peer mode;
        };
      };

      users.users.erlmcp = {
        isSystemUser = true;
        group = "erlmcp";
        home = stateDir;
        description = "erlmcp MCP server";
      };
      users.groups.erlmcp = { };

      environment.etc."erlmcp/erlmcp.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

      networking.firewall.allowedTCPPorts =
        optional cfg.openFirewall cfg.port
        ++ optional cfg.ops.openFirewall cfg.ops.port;

      systemd.tmpfiles.rules = optional (cfg.backups.enable && backupDirOutsideState)
        "d ${cfg.backups.directory} 0750 erlmcp erlmcp - -";

      systemd.services.erlmcp = {
        description = "erlmcp MCP server";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ]
          ++ optionals cfg.socketActivation [ "erlmcp.socket" "erlmcp-ops.socket" ];
        requires = optionals cfg.socketActivation [ "erlmcp.socket" "erlmcp-ops.socket" ];

        # A settings change is a reload (SIGHUP: config re-read, sessions
        # kept); a changed binary or unit is a restart.
        reloadTriggers = [ configFile ];

        serviceConfig = {
          Type = "notify-reload";
          ExecStart = if cfg.credentialFiles == { } then serveCommand else "${startScript}";
          LoadCredential = mapAttrsToList (name: path: "${name}:${path}") cfg.credentialFiles;
          EnvironmentFile = optional (cfg.environmentFile != null) cfg.environmentFile;
          WatchdogSec = mkDefault "30s";
          Restart = "on-failure";
          RestartSec = mkDefault "2s";
          # 65: the database is newer than this binary; 78: invalid config.
          # A restart fixes neither.
          RestartPreventExitStatus = "65 78";
          TimeoutStartSec = mkDefault "5min";
          TimeoutStopSec = mkDefault "${toString (cfg.settings.shutdown.drain_timeout_secs + 15)}s";

          User = "erlmcp";
          Group = "erlmcp";
          StateDirectory = "erlmcp";
          StateDirectoryMode = "0750";
          WorkingDirectory = stateDir;
          ReadWritePaths = optional (cfg.backups.enable && backupDirOutsideState) cfg.backups.directory;
          UMask = "0027";
          LimitNOFILE = mkDefault 65536;

          # Hardening (systemd-analyze security erlmcp).
          CapabilityBoundingSet = if lowPorts then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
          AmbientCapabilities = if lowPorts then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          PrivateUsers = !lowPorts;
          ProtectHostname = true;
          ProtectClock = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          RemoveIPC = true;
          DevicePolicy = "closed";
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];
          SystemCallErrorNumber = "EPERM";
        };
      };
    }

    (mkIf cfg.socketActivation {
      systemd.sockets.erlmcp = {
        description = "erlmcp MCP listener";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ mcpListen ];
        socketConfig = {
          FileDescriptorName = "mcp";
          Service = "erlmcp.service";
          NoDelay = true;
          # The virtual IP exists only on the node that holds it.
          FreeBind = cfg.failover.enable;
        };
      };
      systemd.sockets.erlmcp-ops = {
        description = "erlmcp operations listener";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ opsListen ];
        socketConfig = {
          FileDescriptorName = "ops";
          Service = "erlmcp.service";
          NoDelay = true;
        };
      };
    })

    # Only once interface and virtual IP are set: keepalived's own options
    # do not take null, and its assertions would then fail with a type error
    # before the assertion above could say what is missing.
    (mkIf (cfg.failover.enable && cfg.failover.interface != null && cfg.failover.virtualIp != null) {
      services.keepalived = {
        enable = true;
        openFirewall = mkDefault true;
        enableScriptSecurity = mkDefault true;
        vrrpScripts.erlmcp_health = {
          script = "${checkScript}";
          interval = cfg.failover.checkInterval;
          timeout = cfg.failover.checkTimeout;
          fall = 2;
          rise = 2;
          user = "erlmcp";
          group = "erlmcp";
        };
        vrrpInstances.erlmcp = {
          interface = cfg.failover.interface;
          state = "BACKUP";
          noPreempt = true;
          inherit (cfg.failover) virtualRouterId priority;
          virtualIps = [{ addr = cfg.failover.virtualIp; }];
          trackScripts = [ "erlmcp_health" ];
          extraConfig = concatMapStringsSep "\n" (x: notifyLine x.event x.role) [
            { event = "master"; role = "primary"; }
            { event = "backup"; role = "standby"; }
            { event = "fault"; role = "standby"; }
          ];
        };
      };
    })
  ]);
}
