"""API keys and ephemeral client secrets: who may use the edge.

Keys come from `API_KEYS` (comma-separated) and `API_KEYS_FILE` (one a line), each optionally
`name:key`; the name attributes usage in metrics and logs without showing the key. No key
configured: the edge is open and every caller is the `anonymous` identity.

Ephemeral secrets (`ek_…`) are minted with a real key for browsers: stateless and signed with
HMAC-SHA256 (`EPHEMERAL_SECRET_KEY`), so any edge process sharing that secret accepts them. A
secret carries its expiry, the minting key's name, and the realtime session config to start
with and the session id shown at minting; it opens realtime sessions only, never an HTTP route.
"""

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from server.core.settings import Settings
from server.core.shared_count import SessionSlots, SharedCount

log = logging.getLogger("edge.auth")

EPHEMERAL_PREFIX = "ek_"
ANONYMOUS = "anonymous"
MAX_TOKEN_CHARS = 16_384  # longer bearer tokens are refused before any work
SessionFlavour = Literal["ga", "beta"]


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: the key's name, and for an ephemeral secret the session it grants
    and the id that session was shown with when the secret was minted."""

    name: str
    flavour: SessionFlavour = "ga"
    session: dict[str, Any] | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class Minted:
    value: str
    expires_at: int


def parse_keys(settings: Settings) -> dict[str, str]:
    """`{key: name}` from `API_KEYS` and `API_KEYS_FILE`; blank lines and `#` comments are skipped.

    Keys without a name are called `key-1`, `key-2`, … in the order they are listed.
    """
    entries = settings.api_keys.split(",")
    if settings.api_keys_file:
        try:
            entries += Path(settings.api_keys_file).read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"API_KEYS_FILE {settings.api_keys_file!r} cannot be read: {exc.strerror}") from exc
    keys: dict[str, str] = {}
    for entry in (e.strip() for e in entries):
        if not entry or entry.startswith("#"):
            continue
        name, sep, key = entry.partition(":")
        if not sep:
            name, key = f"key-{len(keys) + 1}", entry
        name, key = name.strip(), key.strip()
        if not key:
            raise ValueError(f"API key {name!r} is empty")
        keys[key] = name or f"key-{len(keys) + 1}"
    return keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class KeySessions:
    """Open realtime sessions per key name, against `API_KEY_MAX_SESSIONS` (None: no cap); with
    `shared_dir` (several workers) each name's count is shared by all of them."""

    def __init__(self, limit: int | None, shared_dir: Path | None = None) -> None:
        self.limit = limit
        self._shared_dir = shared_dir
        self._slots: dict[str, SessionSlots] = {}

    @property
    def open(self) -> dict[str, int]:
        """This process's open sessions by key name."""
        return {name: slots.active for name, slots in self._slots.items() if slots.active}

    def try_acquire(self, name: str) -> bool:
        if self.limit is None:
            return True
        return self._for(name).try_acquire()

    def release(self, name: str) -> None:
        if self.limit is not None:
            self._for(name).release()

    def _for(self, name: str) -> SessionSlots:
        assert self.limit is not None
        if name not in self._slots:
            shared = None
            if self._shared_dir is not None:  # a file per name, named by digest: names may hold any character
                shared = SharedCount(self._shared_dir / f"key-sessions-{_digest(name).hex()[:16]}.json")
            self._slots[name] = SessionSlots(self.limit, shared)
        return self._slots[name]


class KeyRing:
    """Checks bearer tokens against the configured keys, and mints and checks ephemeral secrets."""

    def __init__(self, keys: dict[str, str], signing_key: bytes, sessions: KeySessions | None = None) -> None:
        # Compared by SHA-256 digest, so every comparison is over equal lengths and in constant time.
        self._digests = [(_digest(key), name) for key, name in keys.items()]
        self._signing_key = signing_key
        self.sessions = sessions or KeySessions(None)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        keys = parse_keys(settings)
        secret = settings.ephemeral_secret_key
        signing_key = secret.encode() if secret else secrets.token_bytes(32)
        shared_dir = Path(settings.prometheus_multiproc_dir) if settings.prometheus_multiproc_dir else None
        return cls(keys, signing_key, KeySessions(settings.api_key_max_sessions, shared_dir))

    @property
    def required(self) -> bool:
        return bool(self._digests)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(name for _, name in self._digests))

    def check_bearer(self, token: str | None) -> Identity | None:
        """The identity of an API key (not an ephemeral secret), or None if it is refused.

        Every transport calls this with the token it received (None when it got none). With no
        keys configured everyone is let in as `anonymous`.
        """
        if not self.required:
            return Identity(ANONYMOUS)
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = _digest(token)
        found: str | None = None
        for known, name in self._digests:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(digest, known) and found is None:
                found = name
        return Identity(found) if found is not None else None

    def check_realtime(self, token: str | None) -> Identity | None:
        """Like `check_bearer`, and an unexpired ephemeral secret is accepted too."""
        if token and token.startswith(EPHEMERAL_PREFIX):
            identity = self.check_ephemeral(token)
            if identity is not None or self.required:
                return identity
        return self.check_bearer(token)

    def mint(
        self, owner: Identity, flavour: SessionFlavour, session: dict[str, Any] | None, ttl_s: int, session_id: str
    ) -> Minted:
        """An ephemeral secret for `owner`, valid `ttl_s` seconds, that starts sessions with `session`
        shown as `session_id`."""
        expires_at = int(time.time()) + ttl_s
        claims = {
            "n": owner.name,
            "e": expires_at,
            "f": flavour,
            "s": session,
            "i": session_id,
            "r": _b64(secrets.token_bytes(9)),
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return Minted(f"{EPHEMERAL_PREFIX}{payload}.{self._sign(payload)}", expires_at)

    def check_ephemeral(self, token: str) -> Identity | None:
        """The identity an ephemeral secret grants, or None if it is forged, tampered with or expired."""
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(EPHEMERAL_PREFIX):
            return None
        payload, _, signature = token[len(EPHEMERAL_PREFIX) :].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("e"), int) or claims["e"] <= time.time():
            return None
        flavour: SessionFlavour = "beta" if claims.get("f") == "beta" else "ga"
        session = claims.get("s") if isinstance(claims.get("s"), dict) else None
        session_id = claims.get("i") if isinstance(claims.get("i"), str) else None
        return Identity(str(claims.get("n")), flavour=flavour, session=session, session_id=session_id)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._signing_key, payload.encode(), hashlib.sha256).digest())


def masked(token: str) -> str:
    """A key as an error message may show it: a short prefix and suffix of a long printable key."""
    if len(token) < 20 or not token.isascii() or not token.isprintable():
        return "***"
    return f"{token[:3]}***{token[-3:]}"
