{
  description = "erlmcp: a Model Context Protocol server built to be operated";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # crane 0.23 needs nixpkgs >= 25.11 and Nix >= 2.31.
    crane.url = "github:ipetkov/crane/v0.23.4";
  };

  outputs = { self, nixpkgs, crane }:
    let
      inherit (nixpkgs) lib;

      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The crate and its checks, built the way crane's quick-start does.
      mkCrate = pkgs:
        let
          craneLib = crane.mkLib pkgs;
          root = ./.;

          # JSON files under `dir`, when it exists.
          jsonUnder = dir: lib.fileset.intersection
            (lib.fileset.maybeMissing dir)
            (lib.fileset.fileFilter (file: file.hasExt "json") root);

          # Cargo sources (cleanCargoSource's set, as a fileset) plus the data
          # files the build and the tests read: the MCP JSON schemas and test
          # fixtures. Nothing else triggers a rebuild.
          src = lib.fileset.toSource {
            inherit root;
            fileset = lib.fileset.unions [
              (craneLib.fileset.commonCargoSources root)
              (jsonUnder ./src)
              (jsonUnder ./tests)
              (lib.fileset.maybeMissing ./schema)
              (lib.fileset.maybeMissing ./schemas)
            ];
          };

          commonArgs = {
            inherit src;
            strictDeps = true;
            # rusqlite and zstd build their bundled C sources with stdenv's cc;
            # rusqlite's `session` feature (replication) generates its SQLite
            # bindings with bindgen, which needs libclang at build time.
            nativeBuildInputs = [ pkgs.rustPlatform.bindgenHook ];
            buildInputs = [ ];
          };

          cargoArtifacts = craneLib.buildDepsOnly commonArgs;

          erlmcp = craneLib.buildPackage (commonArgs // {
            inherit cargoArtifacts;
            # The tests run once, in the nextest check.
            doCheck = false;
            meta = {
              description = "Model Context Protocol server with durable state, supervision and verified backups";
              mainProgram = "erlmcp";
              platforms = lib.platforms.linux;
            };
          });

          # The same binary with the test-only fault hooks (an ops endpoint
          # that hangs the store writer), for the VM tests' watchdog story.
          erlmcpFaultInjection = craneLib.buildPackage (commonArgs // {
            inherit cargoArtifacts;
            pname = "erlmcp-fault-injection";
            cargoExtraArgs = "--locked --features fault-injection";
            doCheck = false;
            meta.mainProgram = "erlmcp";
          });

          # The test build of a plausible next release (one more migration, a
          # later version) with the fault hooks, for the upgrade-rollback VM
          # test's specialisation "next". A check input only: never a package.
          erlmcpNextRelease = craneLib.buildPackage (commonArgs // {
            inherit cargoArtifacts;
            pname = "erlmcp-next-release";
            cargoExtraArgs = "--locked --features next-release,fault-injection";
            doCheck = false;
            meta.mainProgram = "erlmcp";
          });
        in
        {
          inherit craneLib erlmcp erlmcpFaultInjection erlmcpNextRelease;
          checks = {
            inherit erlmcp;

            erlmcp-clippy = craneLib.cargoClippy (commonArgs // {
              inherit cargoArtifacts;
              cargoClippyExtraArgs = "--all-targets --all-features -- --deny warnings";
            });

            erlmcp-fmt = craneLib.cargoFmt { inherit src; };

            erlmcp-nextest = craneLib.cargoNextest (commonArgs // {
              inherit cargoArtifacts;
              partitions = 1;
              partitionType = "count";
              cargoNextestPartitionsExtraArgs = "--no-tests=pass";
              # The supervision tests need the test-only fault hooks.
              cargoNextestExtraArgs = "--features fault-injection";
            });

            # deny.toml, as tests/run's `deny` stage uses it. Offline: the
            # advisories need the RustSec database from the network.
            erlmcp-deny = craneLib.cargoDeny {
              inherit src;
              cargoDenyChecks = "--config ${./deny.toml} licenses bans sources";
            };
          };
        };

      # The appliance: erlmcp with backups, ops on loopback, SSH off, as a
      # NixOS system and as a bootable qcow2 image.
      mkAppliance = system: lib.nixosSystem {
        modules = [
          self.nixosModules.default
          self.nixosModules.appliance
          { nixpkgs.hostPlatform = system; }
        ];
      };
    in
    {
      overlays.default = final: _prev: {
        erlmcp = (mkCrate final).erlmcp;
      };

      nixosModules = {
        erlmcp = { pkgs, ... }: {
          imports = [ ./nixos-modules/erlmcp.nix ];
          services.erlmcp.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
        default = self.nixosModules.erlmcp;
        # The appliance's NixOS configuration, to build your own variant.
        appliance = { imports = [ ./nixos-modules/appliance.nix ]; };
      };

      packages = forAllSystems (pkgs: {
        default = (mkCrate pkgs).erlmcp;
        erlmcp = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        appliance-image = self.nixosConfigurations."appliance-${pkgs.stdenv.hostPlatform.system}".config.system.build.image;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          meta.description = "Run erlmcp (erlmcp serve, erlmcp stdio, erlmcp check-config)";
        };
      });

      checks = forAllSystems (pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
          crate = mkCrate pkgs;
          vmTests = import ./vm-tests {
            inherit pkgs;
            erlmcpModule = self.nixosModules.default;
            erlmcpPackage = crate.erlmcpFaultInjection;
            erlmcpNextPackage = crate.erlmcpNextRelease;
          };
          moduleEval = import ./nixos-modules/tests/eval.nix {
            inherit lib;
            # The whole evaluation (config and options): the cases compare
            # what erlmcp's module itself defines, not merged values.
            evalNixos = modules: lib.nixosSystem {
              modules = [
                self.nixosModules.default
                {
                  nixpkgs.hostPlatform = system;
                  boot.isContainer = true;
                  system.stateVersion = "26.05";
                }
              ] ++ modules;
            };
          };
        in
        crate.checks
        // lib.mapAttrs' (name: test: lib.nameValuePair "vm-${name}" test) vmTests
        // {
          module-eval =
            if moduleEval.ok then
              pkgs.writeText "erlmcp-module-eval" (builtins.toJSON moduleEval)
            else
              throw "nixos-modules/tests/eval.nix:\n${lib.concatStringsSep "\n" moduleEval.failures}";

          nix-lint = pkgs.runCommand "erlmcp-nix-lint"
            {
              nativeBuildInputs = [ pkgs.nixpkgs-fmt pkgs.deadnix ];
              src = lib.fileset.toSource {
                root = ./.;
                fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
              };
            }
            ''
              cd $src
              nixpkgs-fmt --check .
              deadnix --fail .
              touch $out
            '';

          # The upgrade guard's script against a fake NixOS (the VM test
          # upgrade-rollback runs it for real).
          upgrade-guard-script = pkgs.runCommand "erlmcp-upgrade-guard-script"
            {
              nativeBuildInputs = [ pkgs.python3 pkgs.jq ];
              src = lib.fileset.toSource {
                root = ./.;
                fileset = lib.fileset.unions [
                  ./nixos-modules/erlmcp-upgrade-guard.sh
                  ./nixos-modules/tests/upgrade-guard-test.py
                ];
              };
            }
            ''
              python3 $src/nixos-modules/tests/upgrade-guard-test.py
              touch $out
            '';
        });

      devShells = forAllSystems (pkgs:
        let crate = mkCrate pkgs; in
        {
          default = crate.craneLib.devShell {
            # The build inputs of the crate checks (not of the VM tests).
            inherit (crate) checks;
            packages = [
              pkgs.cargo-nextest
              pkgs.cargo-deny
              pkgs.nixpkgs-fmt
              pkgs.deadnix
              pkgs.sqlite
            ];
          };
        });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

      nixosConfigurations = {
        appliance = mkAppliance "x86_64-linux";
        appliance-x86_64-linux = self.nixosConfigurations.appliance;
        appliance-aarch64-linux = mkAppliance "aarch64-linux";
      };
    };
}
