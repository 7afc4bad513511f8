"""Where WebRTC calls gather ICE candidates, what they announce, and the STUN/TURN servers they use.

aiortc gathers host candidates through aioice, which takes every interface's address except
loopback and has no option to choose. `WEBRTC_HOST_ADDRESSES` narrows the choice to the addresses
given (loopback included, which the tests' network namespace needs: it has nothing else); it is
installed as aioice's `get_host_addresses`, process-wide, the one hook aioice has (pyproject pins
its minor version; tests/test_webrtc_ice.py fails if the hook stops being used).

Behind a 1:1 NAT (a cloud VM, a Kubernetes node's address) the host candidates are private;
`WEBRTC_PUBLIC_ADDRESS` adds a copy of each with the public address to the answer, and the checks
that arrive there reach the same socket. Without any STUN/TURN server configured, none is used:
aiortc's own default would ask Google's STUN server.
"""

import ipaddress

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from server.core.settings import IceServer, Settings

_ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses


def install_host_addresses(settings: Settings) -> None:
    """Make aioice gather host candidates on `WEBRTC_HOST_ADDRESSES` (all but loopback when unset)."""
    chosen = [a.strip() for a in settings.webrtc_host_addresses.split(",") if a.strip()]
    if not chosen:
        aioice.ice.get_host_addresses = _ORIGINAL_HOST_ADDRESSES
        return
    for address in chosen:
        ipaddress.ip_address(address)  # a typo is said at start, not as a call that never connects

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def configuration(servers: list[IceServer]) -> RTCConfiguration:
    """The peer connection's configuration: the configured STUN/TURN servers, and no others."""
    ice = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers]
    return RTCConfiguration(iceServers=ice)


def announce(sdp: str, public_address: str | None) -> str:
    """`sdp` with a copy of each host candidate at `public_address` (after the original, at a
    lower priority, so a peer on the same network still uses the direct address)."""
    if not public_address:
        return sdp
    lines: list[str] = []
    for line in sdp.splitlines():
        lines.append(line)
        if line.startswith("a=candidate:") and " typ host" in line:
            fields = line[len("a=candidate:") :].split()
            if len(fields) >= 8 and fields[4] != public_address:
                fields[0] = fields[0] + "1"  # its own foundation
                fields[3] = str(max(int(fields[3]) - 1, 0))
                fields[4] = public_address
                lines.append("a=candidate:" + " ".join(fields))
    return "\r\n".join(lines) + "\r\n"
