"""Which engine a new live session uses: whole turns (`session.py`), or Voxtral Realtime streaming
(`stream_engine.py`), chosen from `REALTIME_ENGINE` and what the vLLM for live sessions serves."""

import enum
import logging

from server.backend.vllm_realtime.probe import RealtimeBackend, RealtimeProbe
from server.core.settings import Settings

log = logging.getLogger("edge.realtime")


class EngineKind(enum.StrEnum):
    TURNS = "turns"
    STREAM = "stream"


class EngineSelector:
    """Picks each new session's engine from `REALTIME_ENGINE` (`auto`, `turns`, `stream`).

    `auto` streams when the vLLM for live sessions serves `/v1/realtime`; `stream` requires it (a
    `RuntimeError` otherwise); `turns` never asks. That vLLM is `REALTIME_VLLM_URL` (its first
    model), else the main vLLM (its served model). `probe` asks it at most every
    `RealtimeProbe.RECHECK_S`; file word timestamps use the same probe, so the realtime backend is
    found, and asked, in one place.
    """

    def __init__(self, settings: Settings) -> None:
        self._setting = settings.realtime_engine
        self.probe = RealtimeProbe.of(settings)
        self._logged: EngineKind | None = None

    async def select(self) -> tuple[EngineKind, RealtimeBackend | None]:
        """The engine for a new session, and the realtime backend when it is `STREAM`."""
        choice: tuple[EngineKind, RealtimeBackend | None] = (EngineKind.TURNS, None)
        if self._setting != EngineKind.TURNS:
            backend = await self.probe.backend()
            if backend is not None:
                choice = (EngineKind.STREAM, backend)
            elif self._setting == EngineKind.STREAM:
                raise RuntimeError(
                    f"REALTIME_ENGINE=stream but {self.probe.backend_url} serves no realtime-capable model"
                )
        if choice[0] != self._logged:
            log.info("live sessions use the %s engine", choice[0].value)
            self._logged = choice[0]
        return choice
