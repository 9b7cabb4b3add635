# The erlmcp appliance: a minimal NixOS that runs erlmcp and nothing else
# worth attacking. MCP on port 8080 for the LAN, scheduled backups, the
# operations listener on loopback only, no SSH unless you turn it on.
#
# Built as a bootable qcow2 with nixpkgs' own image machinery
# (nixos/modules/virtualisation/disk-image.nix, the module behind
# `system.build.images.qemu`): `nix build .#appliance-image`.
#
# How an operator gets in: NixOS locks root's password
# (users.users.root.initialHashedPassword = "!"), so nobody logs in on the
# console of the image as built. `appliance.sshAuthorizedKeys` turns on SSH
# for root with those keys only (no passwords); a console password is
# `users.users.root.hashedPassword` in your own module (docs/nixos.md).
{ config, lib, modulesPath, pkgs, ... }:

let
  cfg = config.appliance;
in
{
  options.appliance.sshAuthorizedKeys = lib.mkOption {
    type = lib.types.listOf lib.types.singleLineStr;
    default = [ ];
    example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... operator@laptop" ];
    description = ''
      Public SSH keys that may log in as root. When the list is not empty,
      sshd runs (port 22, opened in the firewall) and accepts these keys
      only: no passwords, no keyboard-interactive logins.
    '';
  };

  imports = [
    (modulesPath + "/profiles/qemu-guest.nix")
    (modulesPath + "/profiles/minimal.nix")
    (modulesPath + "/virtualisation/disk-image.nix")
  ];

  system.stateVersion = "26.05";

  # The disk image: qcow2, ext4 root labelled "nixos" that grows to the
  # disk's size on first boot. x86_64 boots with GRUB from the MBR (plain
  # `qemu-system-x86_64`); aarch64 has no BIOS, so it boots with UEFI.
  image = {
    format = "qcow2";
    efiSupport = lib.mkDefault pkgs.stdenv.hostPlatform.isAarch64;
    baseName = "erlmcp-appliance";
  };
  virtualisation.diskSize = lib.mkDefault 4096;

  boot.kernelParams = [ "console=ttyS0,115200" "console=tty0" ];
  boot.loader.timeout = lib.mkDefault 1;

  networking = {
    hostName = lib.mkDefault "erlmcp";
    useDHCP = lib.mkDefault true;
    firewall.enable = true;
  };

  services.erlmcp = {
    enable = true;
    listenAddress = "0.0.0.0";
    port = 8080;
    openFirewall = true;
    # /healthz, /readyz, /metrics: loopback only. Open it deliberately
    # (ops.listenAddress, ops.openFirewall) for a monitoring system.
    ops.listenAddress = "127.0.0.1";
    backups = {
      enable = true;
      schedule = "hourly";
    };
    # Clients reach the appliance by an address only the network knows;
    # narrow this to the names they use (it guards against DNS rebinding).
    settings.http.allowed_hosts = lib.mkDefault [ "*" ];
  };

  # SSH only with the operator's keys (appliance.sshAuthorizedKeys).
  services.openssh = {
    enable = lib.mkDefault (cfg.sshAuthorizedKeys != [ ]);
    openFirewall = true;
    settings = {
      PermitRootLogin = "prohibit-password";
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
    };
  };
  users.users.root.openssh.authorizedKeys.keys = cfg.sshAuthorizedKeys;

  # The console login prompt says where erlmcp is; root's password stays
  # locked (NixOS's default) unless your own module sets one.
  services.getty.helpLine = ''

    erlmcp appliance: MCP on http://<this machine>:8080/mcp
    root logs in with an SSH key (appliance.sshAuthorizedKeys); the console
    needs a password set in your configuration (users.users.root.hashedPassword).
    state: systemctl status erlmcp; journalctl -u erlmcp; erlmcp backup list
  '';

  # Keep the store small on a small disk.
  nix.settings.auto-optimise-store = true;
  nix.gc = {
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 30d";
  };
}
