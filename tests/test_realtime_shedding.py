"""Under an overload all of a process's realtime sessions lag together; the shared `LagShedder`
sheds them one at a time, the newest first, so that the others can catch up
(`server.realtime.shedding`). On the mechanism with a clock of the test's, then through the runner
with sessions whose processing is stuck (no server: their lag is certain, not timed)."""

import asyncio

from server.api.services import Services
from server.core.settings import Settings
from server.realtime.runner import End, run_session
from server.realtime.shedding import LagShedder
from tests.test_realtime_runner import Client, StuckProtocol, services


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_of_several_lagging_sessions_the_newest_is_shed_then_none_until_the_interval_passes() -> None:
    clock = Clock()
    shedder = LagShedder(clock)
    lags = [20.0, 0.0, 20.0, 20.0, 0.0]  # sessions 0..4 in the order they began; 4 is not behind
    with (
        shedder.watching(lambda: lags[0], 10) as w0,
        shedder.watching(lambda: lags[1], 10) as w1,
        shedder.watching(lambda: lags[2], 10) as w2,
        shedder.watching(lambda: lags[3], 10) as w3,
        shedder.watching(lambda: lags[4], 10) as w4,
    ):
        shedder.report(interval_s=2)  # whichever session reports, the newest lagging one goes
        assert [w.shed.is_set() for w in (w0, w1, w2, w3, w4)] == [False, False, False, True, False]
        clock.now += 1.9
        shedder.report(interval_s=2)
        shedder.report(interval_s=2)
        assert not (w0.shed.is_set() or w2.shed.is_set()), "none more within the interval"
        clock.now += 0.2
        lags[2] = 1.0  # session 2 caught up meanwhile
        shedder.report(interval_s=2)
        assert w0.shed.is_set() and not (w1.shed.is_set() or w2.shed.is_set() or w4.shed.is_set())
        clock.now += 5
        shedder.report(interval_s=2)  # nobody lags any more: nobody goes
        assert not (w1.shed.is_set() or w2.shed.is_set() or w4.shed.is_set())


async def test_under_a_shared_overload_one_session_is_shed_not_all_that_lag() -> None:
    """Six sessions of one process all lag (each one's first message is never done with); one is
    shed, the newest, with `session_lagging`, and the five others are kept until their clients leave."""
    shared = services(realtime_max_lag_s=0.05, realtime_shed_interval_s=600)
    clients = [Client() for _ in range(6)]
    running = []
    for client in clients:  # begun one after the other: the last is the newest
        running.append(asyncio.create_task(run_session(client, StuckProtocol(), shared)))
        client.incoming.put_nowait("{}")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # every first message has now waited longer than the lag bound
    for client in clients:
        client.incoming.put_nowait("{}")  # each session sees its lag and reports it
    newest = running[-1]
    outcome = await asyncio.wait_for(newest, 30)
    assert outcome.end is End.LAGGING
    assert outcome.error is not None and outcome.error.code == "session_lagging"
    for client in clients:  # more messages from all: still lagging, still within the interval
        client.incoming.put_nowait("{}")
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in running[:-1]), "one session shed for all that lag"
    for client in clients[:-1]:
        client.incoming.put_nowait(None)
    outcomes = await asyncio.wait_for(asyncio.gather(*running[:-1]), 30)
    assert {outcome.end for outcome in outcomes} == {End.INPUT_ENDED}


async def test_the_sessions_of_an_app_share_its_shedder_and_turn_model() -> None:
    """Each session takes the app's realtime services anew (`Services.realtime`): they must hand it
    the app's one shedder, or every session would shed on its own."""
    services = Services.build(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        first, second = services.realtime, services.realtime
        assert first.shedder is second.shedder is services.shedder
        assert first.turn_judge is second.turn_judge is not None
    finally:
        await services.aclose()
