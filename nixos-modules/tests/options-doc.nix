# The options of services.erlmcp as data, for the table in docs/nixos.md
# (tests/nix checks that the table matches; `tests/nix --update-docs`
# rewrites it).
#
#   nix-instantiate --eval --strict --json nixos-modules/tests/options-doc.nix \
#     --arg lib 'import /path/to/nixpkgs/lib'
{ lib }:

let
  stub = import ./nixos-stub.nix { inherit lib; };
  evaluated = lib.evalModules { modules = [ stub.module ../erlmcp.nix ]; };
  visible = builtins.filter (o: o.visible && !o.internal)
    (lib.optionAttrSetToDocList evaluated.options.services.erlmcp);
in
map
  (o: {
    inherit (o) name type description readOnly;
    default = o.default.text or null;
    example = o.example.text or null;
  })
  visible
