# The [Service] settings of the erlmcp.service that nixos-modules/erlmcp.nix
# generates with its defaults, as JSON, for tests/lib/dist-unit-parity: the
# scenario harness runs dist/systemd/erlmcp.service, which must be at least
# as strict as this, so that a story that fails under NixOS's unit fails in
# the harness too.
#
#   nix-instantiate --eval --strict --json nixos-modules/tests/unit.nix --arg lib 'import /path/to/nixpkgs/lib'
{ lib }:

let
  stub = import ./nixos-stub.nix { inherit lib; };
  config = (lib.evalModules {
    modules = [ stub.module ../erlmcp.nix { services.erlmcp.enable = true; } ];
  }).config;
in
config.systemd.services.erlmcp.serviceConfig
