# What the VM tests share: the test skeleton around a scenario script, the
# erlmcp node, and the bridge from the harness's machine declarations.
#
# Conventions shared with the local harness (vm-tests/harness): machines are
# named by role (server, client, primary, standby); NixOS numbers them in
# name order on VLAN 1, 192.168.1.N on eth1, and every machine resolves the
# others by name; MCP listens on 8080 (/mcp), the operations listener on 9718.
{ lib, erlmcpModule, erlmcpPackage, erlmcpNextPackage ? null }:

rec {
  mcpPort = 8080;
  opsPort = 9718;

  # scenarios/<story>.machines.json: the harness's declaration of the story's
  # machines, or null when the story has none.
  harnessMachines = story:
    let file = ./scenarios + "/${story}.machines.json"; in
    if builtins.pathExists file then (builtins.fromJSON (builtins.readFile file)).machines else null;

  # A harness machine declaration as a NixOS module. The node in
  # vm-tests/<story>.nix stays the source of truth: this checks that it
  # agrees with the declaration (erlmcp on or off, replication role) and
  # applies what the harness varies per story (config overrides, which win
  # over the node's settings as in the harness; memory; cpus; and the
  # configurations a story switches to, "specialisations": each becomes a
  # NixOS specialisation that changes erlmcp's settings, so
  # /run/booted-system/specialisation/NAME/bin/switch-to-configuration test
  # reloads erlmcp here as in the harness).
  fromHarness = story: name: spec: { config, ... }:
    let
      # `files` and `units` are the harness's way to add drop-ins and units;
      # a NixOS node declares the same in vm-tests/<story>.nix.
      unsupported = lib.subtractLists [ "erlmcp" "role" "config" "memory" "cpus" "files" "units" "specialisations" "releases" "prometheus" ] (builtins.attrNames spec);
      # "prometheus": Prometheus on this machine scrapes its erlmcp and
      # loads erlmcp's rules (services.erlmcp.prometheus.scrape); the keys
      # are its global settings.
      wantsPrometheus = spec ? prometheus;
      wantsErlmcp = spec.erlmcp or false;
      role = spec.role or name;
      replicationRole = if lib.elem role [ "primary" "standby" ] then role else null;
      where = "vm-tests/${story}.nix machine ${name} (scenarios/${story}.machines.json)";
      show = r: if r == null then "none" else r;
      # Keys the module derives from its options (the sockets follow them).
      derived = builtins.filter (path: lib.hasAttrByPath path (spec.config or { }))
        [ [ "http" "listen" ] [ "ops" "listen" ] [ "data_dir" ] ];
    in
    {
      assertions = [
        {
          assertion = unsupported == [ ];
          message = "${where}: the NixOS tests do not read ${lib.concatStringsSep ", " unsupported}; declare the NixOS side in vm-tests/${story}.nix and handle the key in vm-tests/common.nix.";
        }
        {
          assertion = config.services.erlmcp.enable == wantsErlmcp;
          message = "${where}: erlmcp is ${if wantsErlmcp then "declared" else "not declared"} for the harness but ${if config.services.erlmcp.enable then "enabled" else "not enabled"} in the NixOS test.";
        }
        {
          assertion = !wantsErlmcp || config.services.erlmcp.replication.role == replicationRole;
          message = "${where}: the harness role ${role} means replication role ${show replicationRole}, the NixOS node has ${show config.services.erlmcp.replication.role}.";
        }
        {
          assertion = !(spec.releases or false) || erlmcpNextPackage != null;
          message = "${where}: \"releases\" needs the next release's build (vm-tests/default.nix erlmcpNextPackage; flake.nix passes it).";
        }
        {
          assertion = config.services.prometheus.enable == wantsPrometheus
            && (!wantsErlmcp || config.services.erlmcp.prometheus.scrape == wantsPrometheus);
          message = "${where}: Prometheus scraping erlmcp is ${if wantsPrometheus then "declared" else "not declared"} for the harness (\"prometheus\"); the NixOS node must set services.prometheus.enable and services.erlmcp.prometheus.scrape to match.";
        }
        {
          assertion = derived == [ ];
          message = "${where}: config sets ${lib.concatMapStringsSep ", " (lib.concatStringsSep ".") derived}; on NixOS these follow services.erlmcp.{listenAddress,port,ops.*}: set those in the node instead.";
        }
      ];
      services.prometheus.globalConfig = lib.mkIf wantsPrometheus
        (lib.mapAttrs (_: lib.mkOverride 90) spec.prometheus);
      virtualisation.memorySize = lib.mkIf (spec ? memory) spec.memory;
      virtualisation.cores = lib.mkIf (spec ? cpus) spec.cpus;
      services.erlmcp.settings = lib.mkIf (spec ? config)
        (lib.mapAttrsRecursive (_: lib.mkOverride 90) spec.config);
      # The story switches with switch-to-configuration (on by default;
      # said here because the story depends on it).
      system.switch.enable = lib.mkIf (spec ? specialisations) true;
      # Over the settings above, as the harness merges them.
      specialisation = lib.mapAttrs
        (_: s: {
          configuration = {
            services.erlmcp.settings = lib.mapAttrsRecursive (_: lib.mkOverride 80) (s.config or { });
            services.erlmcp.validateConfig = lib.mkIf (s ? validateConfig) s.validateConfig;
          };
        })
        (spec.specialisations or { })
      # "releases": the harness lays out this release and the next one under
      # /opt/erlmcp for `erlmcp upgrade apply`; on NixOS the next release is
      # the specialisation "next", the same system with the next package
      # (the upgrade guard watches the switch to it).
      // lib.optionalAttrs ((spec.releases or false) && erlmcpNextPackage != null) {
        next.configuration.services.erlmcp.package = lib.mkOverride 80 erlmcpNextPackage;
      };
    };

  # The test around scenarios/<story>.py. `nodes` must name the same machines
  # as the story's machines.json, when it has one.
  mkTest = { story, nodes }:
    let
      declared = harnessMachines story;
      names = set: lib.sort lib.lessThan (builtins.attrNames set);
    in
    assert lib.assertMsg (declared == null || names declared == names nodes)
      "vm-tests/${story}.nix declares machines ${toString (names nodes)} but scenarios/${story}.machines.json declares ${toString (names declared)}.";
    {
      name = "erlmcp-${story}";
      defaults = {
        imports = [ erlmcpModule ];
        documentation.enable = false;
      };
      nodes = lib.mapAttrs
        (name: node: {
          imports = [ node ]
            ++ lib.optional (declared != null) (fromHarness story name declared.${name});
        })
        nodes;
      # The story's helper scripts ("prelude" in its machines.json) come
      # first, as the harness does; tests/driver-lint lints this same text.
      testScript = import ./test-script.nix story;
    };

  # Tools the scenario scripts call on every machine.
  tools = pkgs: [ pkgs.curl pkgs.jq pkgs.sqlite pkgs.python3 ];

  # A machine that only talks to the others.
  client = { pkgs, ... }: {
    environment.systemPackages = tools pkgs;
  };

  # An erlmcp node reachable from the LAN on the harness's ports.
  erlmcpNode = { config, pkgs, ... }: {
    environment.systemPackages = tools pkgs;
    services.erlmcp = {
      enable = true;
      # With the test-only fault hooks the stories use.
      package = erlmcpPackage;
      listenAddress = "0.0.0.0";
      port = mcpPort;
      openFirewall = true;
      ops = {
        listenAddress = "0.0.0.0";
        port = opsPort;
        openFirewall = true;
      };
      # Clients use the machine's name or address in the Host header.
      settings.http.allowed_hosts = [
        config.networking.hostName
        config.networking.primaryIPAddress
        "localhost"
        "127.0.0.1"
      ];
    };
  };
}
