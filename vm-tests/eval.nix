# Evaluates the VM tests' machines without building anything: for every
# story that is ready (script and .nix present), each node is evaluated with
# lib.evalModules against the option declarations of
# nixos-modules/tests/nixos-stub.nix, and its failed assertions are
# reported. This catches a node that disagrees with the story's
# machines.json, or an erlmcp setting the module refuses.
#
#   nix-instantiate --eval --strict --json vm-tests/eval.nix --arg lib 'import /path/to/nixpkgs/lib'
{ lib }:

let
  inherit (lib) mkOption types;

  stub = import ../nixos-modules/tests/nixos-stub.nix { inherit lib; };

  pkgs = stub.pkgs // {
    inherit lib;
    jq = stub.pkgs.curl // { name = "jq"; };
    sqlite = stub.pkgs.curl // { name = "sqlite"; };
    python3 = stub.pkgs.curl // { name = "python3"; };
    # The test module as the driver would receive it.
    testers.runNixOSTest = test: test;
  };

  # The options of a NixOS test node that the nodes here set.
  testNode = {
    options = {
      documentation.enable = mkOption { type = types.bool; default = true; };
      networking.primaryIPAddress = mkOption { type = types.str; default = ""; };
      virtualisation.memorySize = mkOption { type = types.ints.positive; default = 1024; };
      virtualisation.cores = mkOption { type = types.ints.positive; default = 1; };
      virtualisation.diskSize = mkOption { type = types.ints.positive; default = 1024; };
      # nixos/modules/system/activation/switchable-system.nix
      system.switch.enable = mkOption { type = types.bool; default = true; };
      # nixos/modules/system/activation/specialisation.nix
      specialisation = mkOption {
        type = types.attrsOf (types.submodule {
          options.configuration = mkOption { type = types.deferredModule; default = { }; };
        });
        default = { };
      };
    };
  };

  tests = import ./. {
    inherit pkgs;
    erlmcpModule = ../nixos-modules/erlmcp.nix;
    erlmcpPackage = pkgs.erlmcp or null;
    # The test build of the next release (flake.nix, erlmcpNextRelease).
    erlmcpNextPackage = pkgs.erlmcp // {
      name = "erlmcp-next-release-0.1.0";
      outPath = "/nix/store/11111111111111111111111111111111-erlmcp-next-release-0.1.0";
    };
  };

  # Node numbers in name order, as nixos/lib/testing/network.nix assigns them.
  nodeModules = test: names: name: [
    stub.module
    testNode
    test.defaults
    test.nodes.${name}
    {
      _module.args.pkgs = lib.mkForce pkgs;
      networking.hostName = name;
      networking.primaryIPAddress = "192.168.1.${toString (1 + lib.lists.findFirstIndex (n: n == name) null names)}";
    }
  ];
  evalNode = test: names: name: (lib.evalModules { modules = nodeModules test names name; }).config;

  # A specialisation: the node's configuration plus its own
  # (inheritParentConfig, NixOS's default).
  evalSpecialisation = test: names: name: configuration:
    (lib.evalModules {
      modules = nodeModules test names name ++ [ configuration { specialisation = lib.mkForce { }; } ];
    }).config;

  failed = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);

  report = test:
    let names = builtins.attrNames test.nodes; in
    {
      inherit (test) name;
      script = builtins.stringLength test.testScript > 0;
      nodes = lib.genAttrs names (name:
        let
          c = evalNode test names name;
          specialisations = lib.mapAttrs
            (_: sp:
              let sc = evalSpecialisation test names name sp.configuration; in
              {
                failedAssertions = failed sc;
                inherit (sc.services.erlmcp) settings validateConfig;
                package = sc.services.erlmcp.package.name;
              })
            c.specialisation;
        in
        {
          failedAssertions = failed c
            ++ lib.concatLists (lib.mapAttrsToList
            (sname: sp: map (m: "specialisation ${sname}: ${m}") sp.failedAssertions)
            specialisations);
          erlmcp = c.services.erlmcp.enable;
          settings = if c.services.erlmcp.enable then c.services.erlmcp.settings else null;
          inherit specialisations;
        });
    };

  reports = lib.mapAttrs (_: report) tests;
in
{
  stories = reports;
  failures = lib.concatLists (lib.mapAttrsToList
    (story: r: lib.concatLists (lib.mapAttrsToList
      (node: n: map (m: "${story}/${node}: ${m}") n.failedAssertions)
      r.nodes))
    reports);
}
