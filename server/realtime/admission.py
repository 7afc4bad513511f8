"""Letting a realtime session in, and its end at the length limit, alike for every transport
(WebSocket and raw TCP).

A session holds one of its key's `API_KEY_MAX_SESSIONS` and one of the edge's
`REALTIME_MAX_SESSIONS` for its whole life, and is counted in the sessions gauge and its key's
session counter, and in the live load that makes file work give way (`server.core.live_load`);
over either limit it is refused with `too_many_sessions`. At
`REALTIME_MAX_SESSION_S` it ends with `session_expired`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from server.core import metrics
from server.core.auth import Identity, KeySessions
from server.core.errors import APIError
from server.core.live_load import LIVE_LOAD
from server.core.shared_count import SessionSlots


class SessionsFull(APIError):
    """The key's sessions or the edge's are all taken."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, code="too_many_sessions")


def session_expired(limit_s: float) -> APIError:
    return APIError(400, f"The session reached its maximum length of {limit_s:g} s.", code="session_expired")


@contextmanager
def admitted(slots: SessionSlots, key_sessions: KeySessions, identity: Identity) -> Iterator[None]:
    """Hold the key's session (of `key_sessions`) and one of the edge's `slots` while the block runs;
    raise `SessionsFull` if either is taken."""
    if not key_sessions.try_acquire(identity.name):
        raise SessionsFull(f"Too many realtime sessions for this key (at most {key_sessions.limit}); try again later.")
    try:
        if not slots.try_acquire():
            raise SessionsFull(f"Too many realtime sessions (at most {slots.limit}); try again later.")
        metrics.KEY_REALTIME_SESSIONS.labels(identity.name).inc()
        metrics.REALTIME_SESSIONS.inc()
        try:
            with LIVE_LOAD.session():
                yield
        finally:
            metrics.REALTIME_SESSIONS.dec()
            slots.release()
    finally:
        key_sessions.release(identity.name)
