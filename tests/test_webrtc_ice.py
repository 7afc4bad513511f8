"""Where the edge's WebRTC calls gather ICE candidates and what they announce: the aioice hook
`WEBRTC_HOST_ADDRESSES` installs is the one aioice gathers through (pyproject pins aioice's minor
version; this fails if a new one stops calling it), and `WEBRTC_PUBLIC_ADDRESS` adds a public copy
of each host candidate. No packet leaves: gathering only binds sockets (no STUN server is given)."""

from collections.abc import Iterator

import aioice
import aioice.ice
import pytest

from server.core.settings import Settings
from server.realtime.webrtc.ice import announce, install_host_addresses


@pytest.fixture
def restored() -> Iterator[None]:
    original = aioice.ice.get_host_addresses
    yield
    aioice.ice.get_host_addresses = original


async def test_aioice_gathers_on_the_configured_addresses_only(restored: None) -> None:
    install_host_addresses(Settings(_env_file=None, webrtc_host_addresses="127.0.0.1"))
    connection = aioice.Connection(ice_controlling=False)
    try:
        await connection.gather_candidates()
        assert {(c.host, c.type) for c in connection.local_candidates} == {("127.0.0.1", "host")}
    finally:
        await connection.close()


def test_a_mistyped_address_is_said_at_start(restored: None) -> None:
    with pytest.raises(ValueError):
        install_host_addresses(Settings(_env_file=None, webrtc_host_addresses="127.0.0.1,10.0.0.300"))


def test_the_public_address_is_announced_beside_each_host_candidate() -> None:
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=candidate:abc 1 udp 2130706431 10.1.2.3 40000 typ host\r\n"
    lines = announce(sdp, "203.0.113.7").splitlines()
    assert lines[-2] == "a=candidate:abc 1 udp 2130706431 10.1.2.3 40000 typ host"
    assert lines[-1] == "a=candidate:abc1 1 udp 2130706430 203.0.113.7 40000 typ host"  # lower priority, own foundation
    assert announce(sdp, None) == sdp
