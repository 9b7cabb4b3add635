"""The local scenario harness: NixOS-test-style stories on Debian machines.

# Layout

A run goes top to bottom through these modules:

* `__main__`  - the command line (`vm-tests/run`), `all`, building erlmcp.
* `driver`    - one story: set up machines, exec the script with the NixOS
                driver's globals, collect logs on failure, clean up always.
* `provision` - the story's machines.json, role configs, files per machine.
* `rootfs`    - the cached Debian bookworm tree every machine boots.
* `host`      - host packages the harness needs (apt), the Debian mirror.
* `netlab`    - network namespaces, the bridge, addresses, /etc/hosts.
* `machine`   - the machine API scenarios call (backend-independent).
* `nspawn`    - backend: systemd-nspawn containers.
* `qemu`      - backend: QEMU VMs; `initrd` builds their tiny initramfs.
* `state`     - the run lock and the record of everything to remove.
* `tomlgen`, `log`, `util`, `errors` - small shared pieces.
"""
