"""The virtual LAN: network namespaces, veth pairs and a bridge.

Addressing follows the NixOS test framework so a scenario may hard-code
addresses and still run unchanged under `runNixOSTest`: machines sorted by
name get 192.168.1.1, .2, ... on a /24 (NixOS puts VLAN 1 on 192.168.1.0/24
and numbers nodes in name order), and /etc/hosts in every machine maps each
role name to its address.

nspawn backend: one namespace per machine (`emh-<name>`) with `eth0` inside,
its veth peer `v-<name>` enslaved to bridge `br0` in the lab namespace
`emh-lab`.  A run in state slot N > 0 (state.py) uses the prefix `emhN-`
instead, so concurrent runs have separate LANs.  `block()` takes `v-<name>` down: to the machine it looks like an
unplugged cable (eth0 loses carrier; keepalived on it goes FAULT).  The
namespace outlives the container, so each boot starts from a clean
interface (`reset`): what the last boot added (a virtual IP keepalived
held when the machine crashed) is gone, as a power cycle clears a NIC.

qemu backend: the QEMU processes themselves run inside the lab namespace, so
the multicast socket LAN between VMs lives on that namespace's loopback and
nothing reaches the host's interfaces.  (See qemu.py.)
"""

import ipaddress

from .util import run

def prefix(slot=0):
    """Network namespace names of the run in state slot `slot`."""
    return "emh-" if not slot else f"emh{slot}-"


def lab_ns(slot=0):
    return prefix(slot) + "lab"
SUBNET = ipaddress.ip_network("192.168.1.0/24")


def addresses(names):
    """{name: "192.168.1.N"} in the NixOS order (sorted names, from 1)."""
    return {n: str(SUBNET.network_address + i) for i, n in enumerate(sorted(names), 1)}


def hosts_file(names):
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for name, addr in addresses(names).items():
        lines.append(f"{addr}\t{name}")
    return "\n".join(lines) + "\n"


def machine_ns(name, slot=0):
    return prefix(slot) + name


def host_veth(name):
    return ("v-" + name)[:15]


def ip(*args, what="ip"):
    return run(["ip", *args], what)


class Lab:
    """The lab namespace with its bridge; machines are plugged in one by one."""

    def __init__(self, state):
        self.state = state
        self.up = False
        self.address = {}
        self.slot = state.slot or 0
        self.ns = lab_ns(self.slot)

    def create(self):
        if self.up:
            return
        # a stale namespace of ours (same name) would make `add` fail
        run(["ip", "netns", "del", self.ns], check=False)
        ip("netns", "add", self.ns, what="creating the lab network namespace")
        self.state.add("netns", self.ns)
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("-n", self.ns, "link", "add", "br0", "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        ip("-n", self.ns, "link", "set", "br0", "up")
        self.up = True

    def plug(self, name, address):
        """Create netns `emh-<name>` with eth0 = `address`/24 on the bridge."""
        ns, peer = machine_ns(name, self.slot), host_veth(name)
        run(["ip", "netns", "del", ns], check=False)
        ip("netns", "add", ns, what=f"creating network namespace {ns}")
        self.state.add("netns", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer,
           "netns", self.ns, what=f"creating the veth pair of {name}")
        ip("-n", self.ns, "link", "set", peer, "master", "br0")
        ip("-n", self.ns, "link", "set", peer, "up")
        self.address[name] = address
        self.reset(name)
        return f"/run/netns/{ns}"

    def reset(self, name):
        """eth0 of `name` as at power-on: only its LAN address, no
        neighbours; addresses a daemon added during the last boot are gone."""
        ns = machine_ns(name, self.slot)
        ip("-n", ns, "addr", "flush", "dev", "eth0")
        ip("-n", ns, "neigh", "flush", "dev", "eth0")
        ip("-n", ns, "addr", "add", f"{self.address[name]}/{SUBNET.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    def set_link(self, name, up):
        ip("-n", self.ns, "link", "set", host_veth(name), "up" if up else "down",
           what=f"{'unblocking' if up else 'blocking'} {name}")
