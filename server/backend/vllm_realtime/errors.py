"""Typed failures of a `/v1/realtime` stream."""


class RealtimeBackendError(Exception):
    """The realtime stream to vLLM failed; the session's items in flight are lost."""

    code = "backend_error"


class RealtimeUnavailable(RealtimeBackendError):
    """vLLM could not be reached, or went away mid-stream."""

    code = "backend_unavailable"


class RealtimeRefused(RealtimeBackendError):
    """vLLM answered with an `error` event (an unknown model, bad audio, a failed generation)."""

    def __init__(self, message: str, code: str | None) -> None:
        super().__init__(f"vLLM realtime error ({code}): {message}")
        self.vllm_code = code

    code = "backend_error"
