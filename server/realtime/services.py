"""What a realtime session needs from the edge, whatever its transport: built by the app's
`Services` (`Services.realtime`) and passed to the WebSocket routes and the raw TCP stream."""

from dataclasses import dataclass, field

from server.backend.model_names import ModelNames
from server.backend.vllm_client import VLLMClient
from server.core.auth import KeyRing
from server.core.settings import Settings
from server.core.shared_count import SessionSlots
from server.realtime.engines import EngineSelector
from server.realtime.semantic_turns import TurnJudge
from server.realtime.shedding import LagShedder
from vad import BatchedVADEngine


@dataclass(frozen=True)
class RealtimeServices:
    settings: Settings
    backend: VLLMClient
    models: ModelNames
    vad_engine: BatchedVADEngine
    engines: EngineSelector
    slots: SessionSlots  # the edge's `REALTIME_MAX_SESSIONS`
    keys: KeyRing  # who may connect (the raw TCP stream checks its first line), and each key's sessions
    shedder: LagShedder = field(default_factory=LagShedder)  # sheds lagging sessions one at a time
    turn_judge: TurnJudge | None = None  # semantic_vad's turn model; None: served as server_vad
