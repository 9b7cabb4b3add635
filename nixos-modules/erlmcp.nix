# services.erlmcp: the erlmcp MCP server as a hardened, socket-activated
# systemd service, with scheduled backups, replication to a hot standby and
# keepalived (VRRP) moving a virtual IP to the node that serves
# (docs/operations/replication-and-failover.md).
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
    concatStringsSep
    elem
    escapeShellArg
    hasInfix
    hasPrefix
    hasSuffix
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

  isLoopback = addr: addr == "::1" || hasPrefix "127." addr;

  mcpListen = hostPort cfg.listenAddress cfg.port;
  opsListen = hostPort cfg.ops.listenAddress cfg.ops.port;

  # Where a Prometheus on this machine reaches the ops listener: a wildcard
  # listener answers on loopback.
  opsScrapeTarget =
    if cfg.ops.listenAddress == "0.0.0.0" then hostPort "127.0.0.1" cfg.ops.port
    else if cfg.ops.listenAddress == "::" then hostPort "::1" cfg.ops.port
    else opsListen;

  replicating = cfg.replication.role != null;

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

  secretInStore = cfg.replication.secretFile != null
    && hasPrefix "${builtins.storeDir}/" cfg.replication.secretFile;

  tlsKeyInStore = cfg.tls.keyFile != null && hasPrefix "${builtins.storeDir}/" cfg.tls.keyFile;

  # systemd's IP access lists: an address or prefix, or one of its names.
  networkValid = n:
    elem n [ "any" "localhost" "link-local" "multicast" ]
    || builtins.match "[0-9a-fA-F.:]+(/[0-9]+)?" n != null;

  # The network policy, for the service (the sockets it opens itself) and
  # for both socket units (the sockets systemd passes it): systemd applies
  # a unit's lists to the sockets that unit creates only.
  ipPolicy = optionalAttrs (cfg.allowedNetworks != null) {
    IPAddressAllow = [ "localhost" ] ++ cfg.allowedNetworks;
    IPAddressDeny = "any";
  };

  # Settings erlmcp applies only when it starts (a reload keeps them, see
  # src/node/reload.rs): a change restarts the service instead of
  # reloading it.
  restartSettings = builtins.toJSON {
    inherit (cfg.settings) data_dir;
    http_listen = cfg.settings.http.listen or null;
    ops = cfg.settings.ops or null;
    store = cfg.settings.store or null;
    replication = cfg.settings.replication or null;
    http_tls_enabled = cfg.settings.http.tls.enabled or false;
  };

  # keepalived's own number syntax: 1, 0.5 (toString 0.5 is "0.500000").
  seconds = x:
    let
      trim = s: if hasSuffix "0" s then trim (lib.removeSuffix "0" s) else lib.removeSuffix "." s;
    in
    if builtins.isInt x then toString x else trim (toString x);

  # keepalived runs the hooks and the check as erlmcp; they talk to the
  # local daemon's ops listener at the address in the config file, which a
  # role change accepts from loopback only (hence the wildcard ops address
  # the failover assertions ask for).
  erlmcpCommand = args: "${exe} ${args} --config ${configPath}";
  notifyLine = event: role:
    ''notify_${event} "${erlmcpCommand "role ${role}"}" erlmcp erlmcp'';

  sameListener =
    cfg.port == cfg.ops.port
    && (cfg.listenAddress == cfg.ops.listenAddress || isWildcard cfg.listenAddress || isWildcard cfg.ops.listenAddress);
in
{
  # services.erlmcp.upgradeGuard: switch back when a new release fails.
  imports = [ ./upgrade-guard.nix ];

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

    allowedNetworks = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "10.0.0.0/8" "fd00::/8" ];
      description = ''
        The networks erlmcp may exchange packets with (systemd's
        `IPAddressAllow=`, with `IPAddressDeny=any`), on both listeners and
        on the connections it opens itself (the replication peer). Loopback
        is always allowed. `null` (the default): no restriction beyond the
        listen addresses and the firewall; `[ ]`: loopback only. Entries are
        addresses with an optional prefix length (`192.168.1.0/24`,
        `fd00::/8`) or systemd's names `link-local`, `multicast`, `any`.
        Include the replication peer and any Prometheus on another machine.
      '';
    };

    tls = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether the MCP listener serves HTTPS only (erlmcp's
          `[http.tls]`). The certificate and key are passed to the service
          as the credentials `tls-cert` and `tls-key` (`LoadCredential=`),
          never through the Nix store or the configuration file. erlmcp
          reads the credentials again on every reload (a certificate or key
          it cannot use rejects the reload and the current one stays), but
          systemd copies them when the service starts, and only newer
          systemd versions copy them again on reload: after a renewal,
          restart where yours does not (docs/operations/security.md, TLS).
        '';
      };

      certificateFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/acme/mcp.example.org/fullchain.pem";
        description = ''
          The certificate chain, PEM, the server's certificate first. A
          string, read by systemd (as root) when the service starts.
        '';
      };

      keyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/acme/mcp.example.org/key.pem";
        description = ''
          The private key, PEM (PKCS#8, PKCS#1 or SEC1), readable by root
          only; outside the Nix store. A string, so that no Nix path
          literal copies it into the store.
        '';
      };
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

    prometheus = {
      rules = mkOption {
        type = types.path;
        readOnly = true;
        default = ../dist/prometheus/erlmcp.rules.yml;
        defaultText = literalExpression "<erlmcp>/dist/prometheus/erlmcp.rules.yml";
        description = ''
          erlmcp's Prometheus rules: the SLIs of its SLOs as recording rules,
          their burn-rate alerts and the alerts on causes, each with a
          `runbook_url` (docs/operations/slos.md). For a Prometheus on
          another machine, add
          `config.services.erlmcp.prometheus.rules` of an erlmcp host to
          that machine's {option}`services.prometheus.ruleFiles`; the rules
          expect the scrape job to be named `erlmcp`.
        '';
      };

      scrape = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether the Prometheus of this machine
          ({option}`services.prometheus.enable`) scrapes erlmcp's operations
          listener, in a job named `erlmcp`, and loads
          {option}`services.erlmcp.prometheus.rules`.
        '';
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
          This node's role in a primary/hot-standby pair (erlmcp's
          `replication.initial_role`), or `null` for a single node. It is the
          role of the data directory's very first start; afterwards the node
          keeps the role it had, and `erlmcp role primary|standby` (run by
          keepalived's hooks with {option}`services.erlmcp.failover.enable`)
          changes it.
        '';
      };

      peer = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "standby:9718";
        description = ''
          The other node's operations listener, `HOST:PORT`: a standby pulls
          changes from it, a primary asks it for its role and epoch. Both
          nodes need {option}`services.erlmcp.ops.listenAddress` on an
          address the other reaches (and
          {option}`services.erlmcp.ops.openFirewall`).
        '';
      };

      mode = mkOption {
        type = types.enum [ "sync" "async" ];
        default = "sync";
        description = ''
          `sync`: a write is acknowledged to the MCP client only once the
          standby has it durably (no acknowledged write lost on failover).
          `async`: acknowledged on the local commit; the standby lags.
        '';
      };

      onStandbyLoss = mkOption {
        type = types.enum [ "block" "degrade" ];
        default = "block";
        description = ''
          In `sync` mode, when the standby stops acknowledging: `block`
          (writes wait `settings.replication.ack_timeout_ms`, then fail;
          reads go on) or `degrade` (the primary goes on alone, with a
          recovery point above zero until the standby is back in sync).
        '';
      };

      secretFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/erlmcp-replication";
        description = ''
          A file holding the shared secret of the pair (at least 16 bytes,
          the same on both nodes), readable by root only. systemd passes it
          to the service as the credential `replication-secret`
          (`LoadCredential=`), where erlmcp reads it; it never enters the
          Nix store or the configuration file. A string, so that no Nix
          path literal copies it into the store.
        '';
      };
    };

    failover = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether keepalived (VRRP) moves a virtual IP to the node of the pair
          that serves. `erlmcp ready` is keepalived's track script (a primary,
          or a standby in sync), and its notify hooks run `erlmcp role
          primary` (MASTER) and `erlmcp role standby` (FAULT). Both
          nodes start as `BACKUP` without preemption; the higher
          {option}`services.erlmcp.failover.priority` wins the first
          election, and the address moves only when its holder fails. VRRP
          is opened in the firewall (`services.keepalived.openFirewall`).
          Further keepalived settings can be added under
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
        description = "VRRP priority; give the preferred primary the higher value (150 and 100).";
      };

      advertInt = mkOption {
        type = types.numbers.between 0.01 255;
        default = 0.5;
        example = 1;
        description = ''
          Seconds between two VRRP adverts of the node holding the address
          (VRRPv3, so below a second is allowed). The other node takes over
          3 adverts plus a skew (up to one advert) after the last one it
          heard: 1.8 s at 0.5 and priority 100. Raise it on hosts so busy
          that adverts come late, which would move the address for nothing.
        '';
      };

      checkInterval = mkOption {
        type = types.ints.positive;
        default = 1;
        description = "Seconds between two runs of the track script (`erlmcp ready`).";
      };

      checkTimeout = mkOption {
        type = types.ints.positive;
        default = 3;
        description = "Seconds after which one run of the track script counts as failed (`/readyz` answers within 2).";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = !cfg.failover.enable || replicating;
          message = "services.erlmcp.failover.enable needs services.erlmcp.replication.role: keepalived moves the virtual IP between a primary and a standby, so both nodes must replicate.";
        }
        {
          assertion = !cfg.failover.enable || (cfg.failover.interface != null && cfg.failover.virtualIp != null);
          message = "services.erlmcp.failover.enable needs services.erlmcp.failover.interface and services.erlmcp.failover.virtualIp.";
        }
        {
          assertion = !replicating || cfg.replication.peer != null;
          message = "services.erlmcp.replication.role needs services.erlmcp.replication.peer: the other node's operations listener (HOST:PORT).";
        }
        {
          assertion = !replicating || cfg.replication.secretFile != null;
          message = "services.erlmcp.replication.role needs services.erlmcp.replication.secretFile: the pair's shared secret, passed to the service as a credential.";
        }
        {
          assertion = !secretInStore;
          message = "services.erlmcp.replication.secretFile is in the Nix store, which every user can read; keep the secret in a root-only file outside it (agenix, sops-nix, /run/keys, ...).";
        }
        {
          assertion = !replicating || !isLoopback cfg.ops.listenAddress;
          message = "services.erlmcp.replication.role: the peer connects to this node's operations listener, but services.erlmcp.ops.listenAddress is ${cfg.ops.listenAddress}; listen on 0.0.0.0, :: or an address the peer reaches.";
        }
        {
          assertion = !cfg.failover.enable || isWildcard cfg.ops.listenAddress;
          message = "services.erlmcp.failover.enable: keepalived's hooks change the role through the operations listener, which accepts that from loopback only, so services.erlmcp.ops.listenAddress must be 0.0.0.0 or :: (it is ${cfg.ops.listenAddress}).";
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
          assertion = !cfg.tls.enable || (cfg.tls.certificateFile != null && cfg.tls.keyFile != null);
          message = "services.erlmcp.tls.enable needs services.erlmcp.tls.certificateFile and services.erlmcp.tls.keyFile.";
        }
        {
          assertion = !tlsKeyInStore;
          message = "services.erlmcp.tls.keyFile is in the Nix store, which every user can read; keep the key in a root-only file outside it.";
        }
        {
          assertion = cfg.allowedNetworks == null || lib.all networkValid cfg.allowedNetworks;
          message = "services.erlmcp.allowedNetworks: entries are addresses with an optional prefix length (10.0.0.0/8, fd00::/8) or link-local, multicast, any; got: ${concatStringsSep ", " (if cfg.allowedNetworks == null then [ ] else cfg.allowedNetworks)}.";
        }
        {
          assertion = lib.all credentialNameValid (lib.attrNames cfg.credentialFiles);
          message = "services.erlmcp.credentialFiles: names must be config keys such as \"replication.token\" (lower-case letters, digits, _ and dots); got: ${concatStringsSep ", " (lib.attrNames cfg.credentialFiles)}.";
        }
      ];

      warnings =
        optional (!replicating && (cfg.replication.peer != null || cfg.replication.secretFile != null))
          "services.erlmcp.replication.peer or secretFile is set but services.erlmcp.replication.role is null, so erlmcp does not replicate.";

      services.erlmcp.settings = {
        data_dir = stateDir;
        # The files are credentials (tls-cert, tls-key): erlmcp's defaults.
        http = { listen = mcpListen; } // optionalAttrs cfg.tls.enable { tls.enabled = true; };
        ops.listen = opsListen;
        backup = {
          enabled = cfg.backups.enable;
          dir = cfg.backups.directory;
          inherit (cfg.backups) schedule;
          keep_last = cfg.backups.retention.keepLast;
          inherit (cfg.backups.retention) hourly daily weekly;
        };
      } // optionalAttrs replicating {
        # The secret is not named here: erlmcp reads the credential
        # ($CREDENTIALS_DIRECTORY/replication-secret) by default.
        replication = {
          enabled = true;
          initial_role = cfg.replication.role;
          inherit (cfg.replication) mode;
          on_standby_loss = cfg.replication.onStandbyLoss;
        } // optionalAttrs (cfg.replication.peer != null) {
          inherit (cfg.replication) peer;
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
        # kept); a changed binary or unit, or a change of what erlmcp only
        # reads at start ([replication], [store], listeners), a restart.
        reloadTriggers = [ configFile ];
        restartTriggers = [ restartSettings ];

        serviceConfig = {
          Type = "notify-reload";
          ExecStart = if cfg.credentialFiles == { } then serveCommand else "${startScript}";
          LoadCredential = mapAttrsToList (name: path: "${name}:${path}") cfg.credentialFiles
            ++ optional (cfg.replication.secretFile != null) "replication-secret:${cfg.replication.secretFile}"
            ++ optionals cfg.tls.enable [ "tls-cert:${toString cfg.tls.certificateFile}" "tls-key:${toString cfg.tls.keyFile}" ];
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
        } // ipPolicy;
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
        } // ipPolicy;
      };
      systemd.sockets.erlmcp-ops = {
        description = "erlmcp operations listener";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ opsListen ];
        socketConfig = {
          FileDescriptorName = "ops";
          Service = "erlmcp.service";
          NoDelay = true;
        } // ipPolicy;
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
        vrrpScripts.erlmcp_ready = {
          script = erlmcpCommand "ready";
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
          trackScripts = [ "erlmcp_ready" ];
          # The nixpkgs module has no options for these.
          extraConfig = concatStringsSep "\n" [
            "version 3"
            "advert_int ${seconds cfg.failover.advertInt}"
            # No hook on BACKUP: every keepalived start passes through it,
            # and demoting the primary there would bounce the roles. A node
            # that must step down learns it from its peer's higher epoch.
            (notifyLine "master" "primary")
            (notifyLine "fault" "standby")
          ];
        };
      };
    })

    (mkIf cfg.prometheus.scrape {
      services.prometheus = {
        ruleFiles = [ cfg.prometheus.rules ];
        scrapeConfigs = [{
          job_name = "erlmcp";
          static_configs = [{ targets = [ opsScrapeTarget ]; }];
        }];
      };
    })
  ]);
}
