# The shape of the flake's outputs, evaluated with nixpkgs' `lib` only:
# flake.nix's `outputs` is called with stub `nixpkgs` and `crane` inputs
# whose builders return their arguments, so the test sees what the flake
# asks crane and NixOS for without building anything.
#
#   nix-instantiate --eval --strict --json nixos-modules/tests/flake-shape.nix \
#     --arg lib 'import /path/to/nixpkgs/lib'
{ lib }:

let
  inherit (lib) all hasInfix hasSuffix;

  systems = [ "x86_64-linux" "aarch64-linux" ];

  fakeDrv = name: extra: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  } // extra;

  stub = import ./nixos-stub.nix { inherit lib; };

  pkgsFor = system: stub.pkgs // {
    inherit lib;
    stdenv = stub.pkgs.stdenv // { hostPlatform = { inherit system; }; };
    writeText = name: _: fakeDrv name { };
    runCommand = name: _: _: fakeDrv name { };
    nixpkgs-fmt = fakeDrv "nixpkgs-fmt" { };
    deadnix = fakeDrv "deadnix" { };
    cargo-nextest = fakeDrv "cargo-nextest" { };
    cargo-deny = fakeDrv "cargo-deny" { };
    sqlite = fakeDrv "sqlite" { };
    testers.runNixOSTest = test: fakeDrv "vm-test" { inherit test; };
  };

  # crane's builders, returning what they were asked for.
  craneStub = {
    mkLib = pkgs: {
      fileset.commonCargoSources = _: [ ];
      buildDepsOnly = args: fakeDrv "erlmcp-deps" { inherit args; };
      buildPackage = args: fakeDrv "erlmcp-0.1.0" { inherit args; inherit (args) meta; };
      cargoClippy = args: fakeDrv "erlmcp-clippy" { inherit args; };
      cargoFmt = args: fakeDrv "erlmcp-fmt" { inherit args; };
      cargoNextest = args: fakeDrv "erlmcp-nextest" { inherit args; };
      cargoDeny = args: fakeDrv "erlmcp-deny" { inherit args; };
      devShell = args: fakeDrv "erlmcp-shell" { inherit args pkgs; };
    };
  };

  nixpkgsStub = {
    lib = lib // {
      nixosSystem = args: { config.system.build.image = fakeDrv "erlmcp-appliance.qcow2" { inherit args; }; };
    };
    legacyPackages = lib.genAttrs systems pkgsFor;
  };

  flake = import ../../flake.nix;
  outputs = flake.outputs { self = outputs; nixpkgs = nixpkgsStub; crane = craneStub; };

  names = builtins.attrNames;

  perSystem = system:
    let
      pkg = outputs.packages.${system}.default;
      checks = outputs.checks.${system};
      common = pkg.args;
      # The module as the flake exports it, on a machine of this system.
      moduleConfig = (lib.evalModules {
        modules = [
          stub.module
          outputs.nixosModules.default
          { _module.args.pkgs = lib.mkForce (pkgsFor system); }
        ];
      }).config;
    in
    {
      "${system}: packages" = names outputs.packages.${system} == [ "appliance-image" "default" "erlmcp" ];
      "${system}: meta.mainProgram" = pkg.meta.mainProgram == "erlmcp" && pkg.meta ? description;
      "${system}: strictDeps, deps built once" = common.strictDeps && common.cargoArtifacts.name == "erlmcp-deps";
      "${system}: tests run in nextest, not twice" = !common.doCheck;
      "${system}: app runs erlmcp" = outputs.apps.${system}.default.type == "app"
        && hasSuffix "/bin/erlmcp" outputs.apps.${system}.default.program;
      "${system}: checks" = all (n: checks ? ${n})
        [ "erlmcp" "erlmcp-clippy" "erlmcp-fmt" "erlmcp-nextest" "erlmcp-deny" "module-eval" "nix-lint" "upgrade-guard-script" ];
      "${system}: clippy denies warnings" = hasInfix "-- --deny warnings" checks.erlmcp-clippy.args.cargoClippyExtraArgs;
      "${system}: clippy and nextest reuse the deps" =
        checks.erlmcp-clippy.args.cargoArtifacts == common.cargoArtifacts
        && checks.erlmcp-nextest.args.cargoArtifacts == common.cargoArtifacts;
      "${system}: cargo-deny stays offline" = !(hasInfix "advisories" checks.erlmcp-deny.args.cargoDenyChecks);
      "${system}: cargo-deny checks licences, bans and sources with deny.toml" =
        hasInfix "licenses bans sources" checks.erlmcp-deny.args.cargoDenyChecks
        && hasInfix "deny.toml" checks.erlmcp-deny.args.cargoDenyChecks;
      "${system}: a VM test per ready story" = all (n: checks ? "vm-${n}") (names (import ../../vm-tests {
        pkgs = pkgsFor system;
        erlmcpModule = outputs.nixosModules.default;
        erlmcpPackage = pkg;
      }));
      "${system}: devShell from the crate checks" = !(outputs.devShells.${system}.default.args.checks ? module-eval);
      "${system}: formatter" = outputs.formatter.${system}.name == "nixpkgs-fmt";
      "${system}: appliance image" = outputs.packages.${system}.appliance-image.name == "erlmcp-appliance.qcow2";
      "${system}: module uses the flake's package" = moduleConfig.services.erlmcp.package == pkg;
    };

  expectations = lib.foldl' (acc: s: acc // perSystem s) { } systems // {
    "outputs" = names outputs == [ "apps" "checks" "devShells" "formatter" "nixosConfigurations" "nixosModules" "overlays" "packages" ];
    "systems" = all (o: names outputs.${o} == lib.sort lib.lessThan systems) [ "packages" "apps" "checks" "devShells" "formatter" ];
    "nixosModules" = names outputs.nixosModules == [ "appliance" "default" "erlmcp" ];
    "overlay adds erlmcp" = (outputs.overlays.default (pkgsFor "x86_64-linux") { }).erlmcp.name == "erlmcp-0.1.0";
    "appliance configurations" = names outputs.nixosConfigurations == [ "appliance" "appliance-aarch64-linux" "appliance-x86_64-linux" ];
    "appliance is x86_64-linux" = lib.any (m: m ? nixpkgs.hostPlatform && m.nixpkgs.hostPlatform == "x86_64-linux")
      outputs.nixosConfigurations.appliance.config.system.build.image.args.modules;
    "inputs pinned" = flake.inputs.nixpkgs.url == "github:NixOS/nixpkgs/nixos-26.05"
      && flake.inputs.crane.url == "github:ipetkov/crane/v0.23.4";
  };

  failures = builtins.filter (n: !expectations.${n}) (names expectations);
in
{
  checks = builtins.length (names expectations);
  inherit failures;
  ok = failures == [ ];
}
