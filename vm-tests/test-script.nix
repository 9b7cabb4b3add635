# The test script of a story, exactly as the NixOS test runs it and as
# tests/driver-lint lints it: the helper files its machines.json lists under
# "prelude", each followed by a newline, then scenarios/<story>.py. The local
# harness builds the same text (harness/provision.py, script_source).
# builtins only, so any Nix evaluates it without nixpkgs.
story:

let
  declaration = ./scenarios + "/${story}.machines.json";
  prelude =
    if builtins.pathExists declaration
    then (builtins.fromJSON (builtins.readFile declaration)).prelude or [ ]
    else [ ];
in
builtins.concatStringsSep "" (map (file: builtins.readFile (./scenarios + "/${file}") + "\n") prelude)
  + builtins.readFile (./scenarios + "/${story}.py")
