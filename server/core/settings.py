"""All settings of the edge, read from the environment (and an optional `.env` file).

Every field here is documented in the README's settings table; keep the two in step.
"""

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IceServer(BaseModel):
    """A STUN or TURN server for WebRTC calls, in the browser's `RTCIceServer` shape."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class Settings(BaseSettings):
    """The edge's configuration. Environment variables use the field name in upper case."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Where the edge listens.
    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"
    tls_certfile: str | None = None
    tls_keyfile: str | None = None

    # Access control.
    api_keys: str = Field(default="", repr=False)
    api_keys_file: str | None = None
    ephemeral_secret_key: str | None = Field(default=None, repr=False)
    metrics_require_key: bool = False
    api_key_max_sessions: int | None = Field(default=None, ge=1)
    cors_allow_origins: str = Field(
        default="",
        description="Origins (scheme://host[:port], comma-separated, or *) whose pages may call the HTTP API",
    )

    # Edge processes.
    workers: int = Field(default=1, ge=1, description="Edge processes serving PORT together (the launcher runs them)")
    prometheus_multiproc_dir: str | None = Field(
        default=None, description="Set by the launcher when WORKERS > 1: the workers' shared metrics and session count"
    )

    # The vLLM backend.
    vllm_url: str | None = Field(
        default=None, description="Base URL of an external vLLM (or RunPod OpenAI URL); unset = start one locally"
    )
    vllm_api_key: str | None = Field(default=None, repr=False)
    vllm_host: str = "127.0.0.1"
    vllm_port: int = 8001
    voxtral_model: str = "mistralai/Voxtral-Mini-3B-2507"
    served_model_name: str | None = None
    vllm_load_format: str = "mistral"
    vllm_python: str = ".venvs/vllm/bin/python"
    vllm_cpu_kvcache_gb: int = 4
    vllm_args: str = ""
    vllm_startup_timeout_s: float = 1800.0
    warmup_requests: int = Field(default=2, ge=0, le=20)
    backend_timeout_s: float = 300.0
    backend_connect_timeout_s: float = 5.0
    max_chunk_concurrency: int = 8
    max_file_backend_requests: int = Field(default=16, ge=1)
    max_file_backend_requests_live: int = Field(default=1, ge=1)
    file_prep_threads: int = Field(default=2, ge=1)
    max_output_tokens: int | None = None
    backend_audio_upload: Literal["auto", "multipart", "json"] = "auto"

    # Model names clients may send; all map to the served model. The realtime names are the SDKs'
    # defaults (the Agents SDKs name `gpt-realtime-2.1` when no model is given).
    model_aliases: str = (
        "whisper-1,gpt-4o-transcribe,gpt-4o-mini-transcribe,voxtral,"
        "gpt-realtime,gpt-realtime-mini,gpt-realtime-1.5,gpt-realtime-2,gpt-realtime-2.1,gpt-realtime-2.1-mini,"
        "gpt-4o-realtime-preview,gpt-4o-mini-realtime-preview"
    )

    # Audio input.
    max_upload_mb: float = 1024.0
    body_grace_s: float = Field(default=30.0, gt=0, description="Time any request body gets, whatever its size")
    body_min_kb_per_s: float = Field(
        default=16.0, gt=0, description="A body gets one second more than BODY_GRACE_S per this many kB it brings"
    )
    max_audio_s: float = 7200.0
    max_chunk_s: float = 30.0
    media_dir: str | None = None

    # Fetching audio from URLs.
    allowed_url_hosts: str = ""
    fetch_timeout_s: float = 60.0
    fetch_max_redirects: int = 5

    # Speech detection.
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 300
    vad_speech_pad_ms: int = 200
    vad_intra_op_threads: int = 1
    semantic_vad: Literal["smart_turn", "server_vad"] = "smart_turn"
    semantic_eager: Literal["at_pause", "after_check"] = "at_pause"
    smart_turn_model: str = Field(
        # Where serve.sh and the Dockerfile install it: vad.smart_turn.DEFAULT_MODEL_PATH.
        default=str(Path(sys.prefix, "share", "smart-turn", "smart-turn-v3.2-cpu.onnx")),
        description="Smart Turn v3.2 ONNX file, the turn-completion model",
    )
    smart_turn_precision: Literal["int8", "float32"] = "int8"

    # RunPod worker.
    max_concurrency: int = 16

    # Realtime sessions.
    realtime_max_sessions: int = 100
    realtime_max_session_s: float = 3600.0
    realtime_idle_timeout_s: float = 300.0
    realtime_ping_interval_s: float = Field(default=20.0, gt=0)
    realtime_ping_timeout_s: float = Field(default=20.0, gt=0)
    realtime_max_message_mb: float = 16.0
    realtime_send_queue: int = 1024
    realtime_send_queue_mb: float = 4.0
    realtime_max_lag_s: float = 10.0
    realtime_max_backlog_mb: float = 32.0
    realtime_max_commit_mb: float = 15.0
    realtime_conversation_max_mb: float = Field(default=16.0, gt=0)
    realtime_audio_turns: int = Field(default=1, ge=0)
    realtime_eager_pause_ms: int = Field(default=150, ge=0)
    realtime_stream_margin_ms: int = Field(default=160, ge=0)
    realtime_vad_max_batch: int = 256
    realtime_vad_batch_ms: float = Field(default=0.0, ge=0)
    realtime_engine: Literal["auto", "turns", "stream"] = "auto"
    realtime_vllm_url: str | None = Field(
        default=None, description="Base URL of a vLLM serving Voxtral Realtime for live sessions; unset = VLLM_URL's"
    )

    # WebRTC calls (`/v1/realtime/calls`): where ICE gathers and what it announces.
    webrtc_host_addresses: str = Field(
        default="", description="Addresses to gather ICE host candidates on (comma-separated); unset = all but loopback"
    )
    webrtc_public_address: str | None = Field(
        default=None, description="Address announced in place of the host candidates' (1:1 NAT, a node's public IP)"
    )
    webrtc_ice_servers: list[IceServer] = Field(
        default_factory=list, description='STUN/TURN servers, JSON: [{"urls": "turn:host:3478", "username": …}]'
    )
    webrtc_connect_timeout_s: float = Field(
        default=15.0, gt=0, description="Time a call's peer has to complete ICE and DTLS and open its data channel"
    )

    # Overload, per edge process: caps on connections (HTTP, WebSocket and the raw TCP stream
    # together), and how lagging realtime sessions are shed.
    max_connections: int = Field(default=1024, ge=1, description="Open connections one edge process takes")
    max_connections_per_client: int = Field(default=256, ge=1, description="Open connections of one client address")
    client_address_header: str | None = Field(
        default=None, description="Request header naming the client's address (behind a proxy); unset = the peer's"
    )
    realtime_shed_interval_s: float = Field(
        default=2.0, gt=0, description="After shedding a lagging session, the time the others get to catch up"
    )

    # Extra ports, off when unset: the raw PCM16 TCP stream, and health and metrics on their own.
    tcp_port: int | None = None
    health_port: int | None = None

    @property
    def model_alias_set(self) -> set[str]:
        return {a.strip() for a in self.model_aliases.split(",") if a.strip()}

    @property
    def allowed_host_set(self) -> set[str]:
        return {h.strip().lower() for h in self.allowed_url_hosts.split(",") if h.strip()}

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    @model_validator(mode="after")
    def _cors_origins(self) -> "Settings":
        for origin in self.cors_origin_list:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
                raise ValueError(
                    f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin; write scheme://host[:port], "
                    "e.g. https://app.example.com, or *"
                )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("TLS_CERTFILE and TLS_KEYFILE must be set together")
        return self

    @property
    def tls(self) -> bool:
        return bool(self.tls_certfile and self.tls_keyfile)

    @property
    def json_audio_upload(self) -> bool:
        """Send audio to the backend as JSON: needed behind RunPod's proxy, which carries JSON only."""
        if self.backend_audio_upload == "auto":
            host = urlsplit(self.vllm_url or "").hostname or ""
            return host == "runpod.ai" or host.endswith(".runpod.ai")
        return self.backend_audio_upload == "json"

    @property
    def backend_url(self) -> str:
        """Base URL of vLLM's OpenAI API, ending in `/v1`."""
        if self.vllm_url:
            url = self.vllm_url.rstrip("/")
            return url if url.endswith("/v1") else url + "/v1"
        return f"http://{self.vllm_host}:{self.vllm_port}/v1"


@lru_cache
def get_settings() -> Settings:
    return Settings()
