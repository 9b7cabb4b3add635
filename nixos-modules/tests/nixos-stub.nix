# Small declarations of the NixOS options services.erlmcp sets, typed as
# nixos-26.05 declares them, and a stub `pkgs`, so that the module can be
# evaluated with nothing but nixpkgs' `lib` (see ./eval.nix). Only the
# options the module uses are declared: a misspelt option name fails here as
# it would on NixOS.
#
# Where NixOS itself writes to one of these options on every system (its
# own tmpfiles rules, users, /etc files, packages, units, assertions), the
# stub writes a few of the same entries too (`nixosOwn` below), so that an
# expectation on a merged value fails here as it would on NixOS.
#
# `nixosModules` is nixpkgs' nixos/modules directory, or a partial copy of
# it (tests/nix passes $CI_ERLMCP_CACHE/nixpkgs/nixos/modules when present).
# Module files found there are evaluated instead of their stub: today the
# keepalived module (services/networking/keepalived), which the failover
# options write to.
{ lib
, nixosModules ? null
}:

let
  inherit (lib) mkOption types;

  realModule = rel:
    if nixosModules != null && builtins.pathExists (nixosModules + "/${rel}")
    then nixosModules + "/${rel}"
    else null;

  keepalivedModule = realModule "services/networking/keepalived/default.nix";

  # nixos/lib/systemd-unit-options.nix: unitOption (scalars, or lists of
  # them for repeatable settings).
  unitScalar = types.oneOf [ types.bool types.int types.str types.path types.package ];
  unitOption = types.either unitScalar (types.listOf unitScalar);

  listOfStr = mkOption { type = types.listOf types.str; default = [ ]; };

  unitCommon = {
    description = mkOption { type = types.str; default = ""; };
    documentation = listOfStr;
    wantedBy = listOfStr;
    requiredBy = listOfStr;
    wants = listOfStr;
    requires = listOfStr;
    after = listOfStr;
    before = listOfStr;
    unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    reloadTriggers = mkOption { type = types.listOf unitOption; default = [ ]; };
  };

  service = types.submodule {
    options = unitCommon // {
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      environment = mkOption { type = types.attrsOf (types.nullOr types.str); default = { }; };
      path = mkOption { type = types.listOf types.package; default = [ ]; };
    };
  };

  timer = types.submodule {
    options = unitCommon // {
      timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  socket = types.submodule {
    options = unitCommon // {
      listenStreams = listOfStr;
      socketConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  # nixos/modules/services/networking/keepalived/*.nix
  vrrpScript = types.submodule {
    options = {
      script = mkOption { type = types.str; };
      interval = mkOption { type = types.int; default = 1; };
      timeout = mkOption { type = types.int; default = 5; };
      weight = mkOption { type = types.int; default = 0; };
      rise = mkOption { type = types.int; default = 5; };
      fall = mkOption { type = types.int; default = 3; };
      user = mkOption { type = types.str; default = "keepalived_script"; };
      group = mkOption { type = types.nullOr types.str; default = null; };
      extraConfig = mkOption { type = types.lines; default = ""; };
    };
  };

  virtualIp = types.submodule {
    options = {
      addr = mkOption { type = types.str; };
      brd = mkOption { type = types.nullOr types.str; default = null; };
      dev = mkOption { type = types.nullOr types.str; default = null; };
      scope = mkOption { type = types.nullOr types.str; default = null; };
      label = mkOption { type = types.nullOr types.str; default = null; };
    };
  };

  vrrpInstance = types.submodule {
    options = {
      interface = mkOption { type = types.str; };
      state = mkOption { type = types.enum [ "MASTER" "BACKUP" ]; default = "BACKUP"; };
      virtualRouterId = mkOption { type = types.ints.between 0 255; };
      priority = mkOption { type = types.int; default = 100; };
      noPreempt = mkOption { type = types.bool; default = false; };
      useVmac = mkOption { type = types.bool; default = false; };
      vmacInterface = mkOption { type = types.nullOr types.str; default = null; };
      vmacXmitBase = mkOption { type = types.bool; default = false; };
      unicastSrcIp = mkOption { type = types.nullOr types.str; default = null; };
      unicastPeers = listOfStr;
      virtualIps = mkOption { type = types.listOf virtualIp; default = [ ]; };
      trackScripts = listOfStr;
      trackInterfaces = listOfStr;
      extraConfig = mkOption { type = types.lines; default = ""; };
    };
  };

  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = lib.head (lib.splitString "-" name);
  };

  pkgs = {
    erlmcp = fakeDrv "erlmcp-0.1.0";
    curl = fakeDrv "curl-8.0.0";
    keepalived = fakeDrv "keepalived-2.3.0";
    envsubst = fakeDrv "envsubst-1.4.0";
    coreutils = fakeDrv "coreutils-9.0";
    jq = fakeDrv "jq-1.8.0";
    nix = fakeDrv "nix-2.31.0";
    writeText = name: text: builtins.toFile name text;
    stdenv = {
      buildPlatform.canExecute = _: true;
      hostPlatform = { system = "x86_64-linux"; };
    };
    # pkgs/pkgs-lib/formats.nix: toml's type (no null: TOML has none).
    formats.toml = _: {
      type =
        let
          valueType = types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf valueType)
            (types.listOf valueType)
          ] // { description = "TOML value"; };
        in
        valueType;
      generate = name: value: builtins.toFile name (builtins.toJSON value);
    };
    writeShellScript = name: text: builtins.toFile name text;
    runCommand = name: _env: script: builtins.toFile name script;
  };
  # What NixOS itself contributes, on every system, to options declared
  # here (entries as in the nixos-26.05 module named on each line).
  nixosOwn = {
    assertions = [{ assertion = true; message = "(an assertion of NixOS itself)"; }];
    # nixos/modules/system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = [
      "d  /run/lock                          0755 root root - -"
      "d  /var/db                            0755 root root - -"
      "L  /var/lock                          -    -    -    - ../run/lock"
    ];
    # nixos/modules/config/users-groups.nix
    users.users.root = { home = "/root"; group = "root"; description = "System administrator"; };
    users.users.nobody = { isSystemUser = true; group = "nogroup"; description = "Unprivileged account (don't use!)"; };
    users.groups = { root = { }; wheel = { }; nogroup = { }; };
    # nixos/modules/config/networking.nix
    environment.etc.hosts.source = builtins.toFile "hosts" "127.0.0.1 localhost\n::1 localhost\n";
    # nixos/modules/config/system-path.nix (requiredPackages)
    environment.systemPackages = [ pkgs.coreutils pkgs.curl ];
    # nixos/modules/services/system/nscd.nix, on by default
    systemd.services.nscd = { description = "Name Service Cache Daemon"; wantedBy = [ "nss-lookup.target" ]; };
    # nixos/modules/services/system/nix-daemon.nix
    systemd.sockets.nix-daemon = { description = "Nix Daemon Socket"; wantedBy = [ "sockets.target" ]; listenStreams = [ "/nix/var/nix/daemon-socket/socket" ]; };
  };
in
{
  inherit pkgs;

  # Whether the real keepalived module was evaluated (else its stub).
  realKeepalived = keepalivedModule != null;

  module = {
    imports = lib.optional (keepalivedModule != null) keepalivedModule ++ [{
      # nixos/modules/services/monitoring/prometheus/default.nix (scrape
      # configs are typed submodules there; plain attribute sets here). A
      # module of its own: `services` below is replaced whole by `//`.
      options.services.prometheus = {
        enable = mkOption { type = types.bool; default = false; };
        # A typed submodule there (scrape_interval, evaluation_interval, ...).
        globalConfig = mkOption { type = types.attrsOf types.str; default = { }; };
        ruleFiles = mkOption { type = types.listOf types.path; default = [ ]; };
        scrapeConfigs = mkOption { type = types.listOf types.attrs; default = [ ]; };
      };
    }];

    options = {
      # nixos/modules/misc/meta.nix (the keepalived module sets meta.maintainers).
      meta = mkOption { type = types.lazyAttrsOf types.raw; default = { }; };

      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };

      networking.hostName = mkOption { type = types.str; default = "nixos"; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      networking.firewall.extraCommands = mkOption { type = types.lines; default = ""; };
      networking.firewall.extraStopCommands = mkOption { type = types.lines; default = ""; };
      networking.firewall.extraInputRules = mkOption { type = types.lines; default = ""; };
      networking.nftables.enable = mkOption { type = types.bool; default = false; };

      users.users = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            isSystemUser = mkOption { type = types.bool; default = false; };
            group = mkOption { type = types.str; default = ""; };
            home = mkOption { type = types.path; default = "/var/empty"; };
            description = mkOption { type = types.str; default = ""; };
          };
        });
        default = { };
      };
      users.groups = mkOption { type = types.attrsOf (types.submodule { }); default = { }; };

      # nixos/modules/system/etc/etc.nix: `text` becomes `source`; a `mode`
      # other than "symlink" makes a copy instead of a link into the store.
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule ({ name, config, ... }: {
          options = {
            source = mkOption { type = types.path; };
            text = mkOption { type = types.nullOr types.lines; default = null; };
            mode = mkOption { type = types.str; default = "symlink"; };
          };
          config.source = lib.mkIf (config.text != null) (builtins.toFile (baseNameOf name) config.text);
        }));
        default = { };
      };
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };

      systemd.services = mkOption { type = types.attrsOf service; default = { }; };
      systemd.sockets = mkOption { type = types.attrsOf socket; default = { }; };
      systemd.timers = mkOption { type = types.attrsOf timer; default = { }; };
      systemd.tmpfiles.rules = listOfStr;

      # nixos/modules/system/activation/pre-switch-check.nix
      system.preSwitchChecks = mkOption { type = types.attrsOf types.str; default = { }; };
      # nixos/modules/config/nix.nix
      nix.enable = mkOption { type = types.bool; default = true; };
      nix.package = mkOption { type = types.package; default = pkgs.nix; };

    } // lib.optionalAttrs (keepalivedModule == null) {
      services.keepalived = {
        enable = mkOption { type = types.bool; default = false; };
        openFirewall = mkOption { type = types.bool; default = false; };
        enableScriptSecurity = mkOption { type = types.bool; default = false; };
        vrrpScripts = mkOption { type = types.attrsOf vrrpScript; default = { }; };
        vrrpInstances = mkOption { type = types.attrsOf vrrpInstance; default = { }; };
        extraGlobalDefs = mkOption { type = types.lines; default = ""; };
        extraConfig = mkOption { type = types.lines; default = ""; };
      };
    };

    config = nixosOwn // { _module.args.pkgs = pkgs; };
  };
}
