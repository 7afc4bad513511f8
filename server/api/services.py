"""The edge's long-lived services, built once per app in its lifespan and reached through typed
accessors, so routes never read an untyped `app.state`.

The HTTP app and the RunPod worker build the same `Services`; the realtime session slots live here
too (one set per app: tests run several apps in one process; with several workers, one count
shared by all of them).
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import HTTPConnection

from server.backend.model_names import ModelNames
from server.backend.vllm_client import VLLMClient
from server.backend.warmup import Warmup
from server.core.auth import KeyRing
from server.core.settings import Settings
from server.core.shared_count import SessionSlots, SharedCount
from server.files.fetch import SafeFetcher
from server.files.transcription import TranscriptionService
from server.realtime.engines import EngineSelector
from server.realtime.semantic_turns import TurnJudge
from server.realtime.services import RealtimeServices
from server.realtime.shedding import LagShedder
from server.realtime.webrtc.calls import Calls
from vad import BatchedSmartTurn, BatchedVADEngine, SileroSequenceModel, SmartTurnModel

log = logging.getLogger("edge")


@dataclass
class Services:
    """Everything a route needs besides its request."""

    settings: Settings
    backend: VLLMClient
    fetcher: SafeFetcher
    models: ModelNames
    transcriber: TranscriptionService
    vad_engine: BatchedVADEngine
    realtime_slots: SessionSlots
    keys: KeyRing
    realtime_engines: EngineSelector
    warmup: Warmup
    turn_judge: TurnJudge | None = None
    shedder: LagShedder = field(default_factory=LagShedder)  # one per app: its sessions shed one at a time
    calls: Calls = field(default_factory=Calls)  # the app's WebRTC calls

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        """Create the clients and engines; `start()` them on the serving event loop, `aclose()` at the end."""
        backend = VLLMClient(settings)
        fetcher = SafeFetcher(settings)
        models = ModelNames(settings, backend)
        engines = EngineSelector(settings)
        return cls(
            settings=settings,
            backend=backend,
            fetcher=fetcher,
            models=models,
            transcriber=TranscriptionService(
                settings, backend, fetcher, SileroSequenceModel(intra_op_threads=settings.vad_intra_op_threads)
            ),
            vad_engine=BatchedVADEngine(
                max_batch=settings.realtime_vad_max_batch,
                intra_op_threads=settings.vad_intra_op_threads,
                batch_window_s=settings.realtime_vad_batch_ms / 1000,
            ),
            realtime_slots=SessionSlots(settings.realtime_max_sessions, _shared_session_count(settings)),
            keys=KeyRing.from_settings(settings),
            realtime_engines=engines,
            warmup=Warmup.of(settings, backend, models, engines.probe),
            turn_judge=_turn_judge(settings),
        )

    @property
    def realtime(self) -> RealtimeServices:
        """What realtime sessions use, taken from these services at each call (so an engine a test
        swaps in reaches the sessions opened afterwards)."""
        return RealtimeServices(
            settings=self.settings,
            backend=self.backend,
            models=self.models,
            vad_engine=self.vad_engine,
            engines=self.realtime_engines,
            slots=self.realtime_slots,
            keys=self.keys,
            shedder=self.shedder,
            turn_judge=self.turn_judge,
        )

    async def start(self) -> None:
        await self.vad_engine.start()
        self.warmup.start()

    async def aclose(self) -> None:
        await self.warmup.aclose()
        await self.calls.aclose()
        await self.vad_engine.stop()
        if self.turn_judge is not None:
            self.turn_judge.close()
        await self.fetcher.aclose()
        await self.backend.aclose()


def _turn_judge(settings: Settings) -> TurnJudge | None:
    """Smart Turn for `semantic_vad`, unless `SEMANTIC_VAD=server_vad` or its file is missing (said once)."""
    if settings.semantic_vad != "smart_turn":
        return None
    started = time.perf_counter()
    try:
        model = SmartTurnModel(
            settings.smart_turn_model,
            intra_op_threads=settings.vad_intra_op_threads,
            precision=settings.smart_turn_precision,
        )
    except FileNotFoundError as exc:
        log.warning("%s: semantic_vad is served as server_vad", exc)
        return None
    log.info(
        "semantic_vad: Smart Turn (%s) from %s, loaded in %.2f s",
        model.precision,
        settings.smart_turn_model,
        time.perf_counter() - started,
    )
    return TurnJudge(BatchedSmartTurn(model))


def _shared_session_count(settings: Settings) -> SharedCount | None:
    """With several workers, the open sessions are counted in their shared directory."""
    if settings.prometheus_multiproc_dir is None:
        return None
    return SharedCount(Path(settings.prometheus_multiproc_dir) / "realtime-sessions.json")


def services_of(connection: HTTPConnection) -> Services:
    """The services of the app serving `connection` (an HTTP request or a WebSocket)."""
    found = getattr(connection.app.state, "services", None)
    if not isinstance(found, Services):
        raise RuntimeError("the app's services are not running (lifespan not started)")
    return found
