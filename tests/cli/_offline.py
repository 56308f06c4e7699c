"""Run inside a network namespace that has only loopback (``unshare -rn``): starts the whole
local stack, drives it through the CLI and the host, and exits 0 when everything worked.
Used by test_no_network.py; prints what it did."""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import sys
import tempfile
from pathlib import Path

import requests

from scripts.stack import Stack

# Linux ioctls (include/uapi/linux/sockios.h) and IFF_UP (include/uapi/linux/if.h): a fresh
# network namespace has its loopback interface down.
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        raw = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0))
        flags = struct.unpack("16sh", raw[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def no_route_out() -> bool:
    try:
        socket.create_connection(("192.0.2.1", 443), timeout=2).close()  # TEST-NET-1 (RFC 5737)
    except OSError:
        return True
    return False


def main() -> int:
    loopback_up()
    assert no_route_out(), "this namespace still has a route off loopback"
    stack = Stack.on_free_ports(run_dir=Path(tempfile.mkdtemp(prefix="keysteward-offline-")), quiet=True)
    try:
        stack.start()
        plan = json.loads(stack.cli("plan", "--json").stdout)
        status = json.loads(stack.cli("status", "--key", f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-adx",
                                      "--json").stdout)
        ping = requests.get(f"{stack.host_url}/admin/host/ping", timeout=5)
        print(json.dumps({"plans": len(plan["plans"]), "versions": len(status["versions"]), "ping": ping.status_code}))
        return 0 if ping.ok and plan["plans"] and status["versions"] else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
