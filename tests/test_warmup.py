"""The warm-up before `/ready`: against the real vLLM it sends each kind of request the edge sends,
`/ready` says `warming_up` until it is done, and a kind that fails never keeps the edge unready."""

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import pytest

from server.backend.warmup import Warmup, WarmupKind, warmup_clip
from server.core.errors import APIError
from tests.conftest import EdgeServer, metric_sum, vllm_requests_finished


def warmed(edge: EdgeServer, kind: str, outcome: str = "ok") -> float:
    page = httpx.get(f"{edge.url}/metrics", timeout=10).text
    return metric_sum(page, "edge_warmup_request_seconds_count", f'kind="{kind}",outcome="{outcome}"')


def wait_ready(edge: EdgeServer, timeout_s: float = 180) -> list[str]:
    """Poll `/ready` until it is 200; the statuses seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        ready = httpx.get(f"{edge.url}/ready", timeout=10)
        seen.append(ready.json()["status"])
        if ready.status_code == 200:
            return seen
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "5"
        assert time.monotonic() < deadline, f"not ready in {timeout_s} s: {ready.json()}"
        time.sleep(0.05)


def test_ready_waits_for_the_warm_up_of_each_kind(make_edge: Callable[..., EdgeServer], vllm_url: str) -> None:
    before_vllm = vllm_requests_finished(vllm_url)
    edge = make_edge(warmup_requests=2)
    seen = wait_ready(edge)
    assert seen[0] == "warming_up" and seen[-1] == "ready"
    for kind in ("transcription", "transcription stream", "chat"):
        assert warmed(edge, kind) >= 2, kind
    assert warmed(edge, "realtime") == 0  # this vLLM serves no realtime model
    # Each warm-up request reached vLLM and ran to its (capped) end.
    assert vllm_requests_finished(vllm_url) - before_vllm >= 6


def test_warm_up_streams_through_a_realtime_vllm(make_edge: Callable[..., EdgeServer], realtime_vllm_url: str) -> None:
    edge = make_edge(warmup_requests=1, realtime_vllm_url=realtime_vllm_url, realtime_engine="stream")
    before = warmed(edge, "realtime")
    wait_ready(edge)
    assert warmed(edge, "realtime") >= max(before, 1)
    assert warmed(edge, "realtime", "failed") == 0


def test_no_warm_up_means_ready_at_once(edge: EdgeServer) -> None:
    assert httpx.get(f"{edge.url}/ready").json()["status"] == "ready"


def never_ready_then_ready() -> Callable[[], object]:
    calls = 0

    async def wait_ready() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise APIError(503, "not yet", code="backend_unavailable")

    return wait_ready


async def test_a_failing_kind_ends_that_kind_only(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[str] = []

    async def ok(clip: object) -> None:
        sent.append("ok")

    async def broken(clip: object) -> None:
        sent.append("broken")
        raise RuntimeError("vLLM said no")

    async def plan() -> list[WarmupKind]:
        return [WarmupKind("broken", broken), WarmupKind("ok", ok)]

    warmup = Warmup(requests=3, wait_ready=never_ready_then_ready(), plan=plan, poll_s=0.01)
    assert not warmup.done
    with caplog.at_level(logging.INFO, logger="edge.warmup"):
        results = await warmup.run()
    assert warmup.done
    assert sent == ["broken", "ok", "ok", "ok"]
    assert [(r.name, len(r.seconds), r.error) for r in results] == [("broken", 0, "vLLM said no"), ("ok", 3, None)]
    (line,) = [r for r in caplog.records if r.name == "edge.warmup"]
    assert line.levelno == logging.WARNING and "broken failed: vLLM said no" in line.getMessage()


async def test_a_request_that_never_answers_times_out() -> None:
    async def hangs(clip: object) -> None:
        await asyncio.Event().wait()

    async def plan() -> list[WarmupKind]:
        return [WarmupKind("hangs", hangs)]

    warmup = Warmup(requests=2, wait_ready=never_ready_then_ready(), plan=plan, poll_s=0.01, request_timeout_s=0.05)
    (result,) = await warmup.run()
    assert result.error == "no answer in 0.05 s" and warmup.done


async def test_shutdown_cancels_the_request_in_flight() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def slow(clip: object) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def plan() -> list[WarmupKind]:
        return [WarmupKind("slow", slow)]

    warmup = Warmup(requests=1, wait_ready=never_ready_then_ready(), plan=plan, poll_s=0.01)
    warmup.start()
    await asyncio.wait_for(started.wait(), 5)
    await warmup.aclose()
    assert cancelled.is_set()


def test_clips_differ_so_vllm_cannot_reuse_its_audio_cache() -> None:
    first, second = warmup_clip(0), warmup_clip(1)
    assert first.shape == second.shape and first.dtype == second.dtype
    assert abs(first - second).max() > 0.01
