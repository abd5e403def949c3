"""The pusher's wait for a lull before a round (``Pusher._gather``), on trio's mock clock:
it waits while the outbox grows or the file system serves requests, never longer than
``GATHER_MAX``, and a lone change goes after one ``GATHER_STEP``."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from cairn.fs.sync.pusher import BATCH, GATHER_MAX, GATHER_STEP, Pusher


class Outbox:
    def __init__(self, n: int) -> None:
        self.n = n

    def outbox_len(self) -> int:
        return self.n


def gather_time(tmp_path: Path, queued: int, *, busy_for: float = 0.0,
                grow_for: float = 0.0, with_activity: bool = True) -> float:  # fmt: skip
    """Seconds (mock clock) ``_gather`` waited while requests were served for ``busy_for``
    seconds and the outbox grew for ``grow_for`` seconds, each every millisecond."""
    store = Outbox(queued)
    requests = 0

    def activity() -> int:
        return requests

    pusher = Pusher(store, None, None, ns=1, parked_file=tmp_path / "parked")  # type: ignore[arg-type]
    if with_activity:
        pusher.activity = activity

    async def main() -> float:
        nonlocal requests

        async def serve(seconds: float) -> None:
            nonlocal requests
            for _ in range(round(seconds * 1000)):
                requests += 1
                await trio.sleep(0.001)

        async def grow(seconds: float) -> None:
            for _ in range(round(seconds * 1000)):
                store.n += 1
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, busy_for)
            nursery.start_soon(grow, grow_for)
            start = trio.current_time()
            await pusher._gather()
            waited = trio.current_time() - start
            nursery.cancel_scope.cancel()
        return waited

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_lone_change_waits_one_step(tmp_path: Path) -> None:
    assert gather_time(tmp_path, 1) == GATHER_STEP
    assert gather_time(tmp_path, 0, busy_for=5) == 0  # nothing queued: no wait at all


def test_requests_being_served_hold_the_round_until_they_pause(tmp_path: Path) -> None:
    waited = gather_time(tmp_path, 1, busy_for=0.3)
    assert 0.3 <= waited <= 0.3 + 2 * GATHER_STEP
    # without the activity hook only the outbox counts
    assert gather_time(tmp_path, 1, busy_for=0.3, with_activity=False) == GATHER_STEP


def test_continuous_activity_still_gets_a_round_every_gather_max(tmp_path: Path) -> None:
    waited = gather_time(tmp_path, 1, busy_for=10)
    assert GATHER_MAX <= waited <= GATHER_MAX + GATHER_STEP
    waited = gather_time(tmp_path, 1, grow_for=10)
    assert GATHER_MAX <= waited <= GATHER_MAX + GATHER_STEP


def test_a_full_batch_waits_only_while_requests_are_served(tmp_path: Path) -> None:
    assert gather_time(tmp_path, BATCH) == GATHER_STEP  # first round: nothing seen before
    assert gather_time(tmp_path, BATCH, with_activity=False) == 0  # only the outbox counts
    assert GATHER_MAX <= gather_time(tmp_path, BATCH, busy_for=10) <= GATHER_MAX + GATHER_STEP


def test_a_backlog_drains_without_waits_while_the_drive_is_idle(tmp_path: Path) -> None:
    store = Outbox(3 * BATCH)
    pusher = Pusher(store, None, None, ns=1, parked_file=tmp_path / "parked")  # type: ignore[arg-type]
    pusher.activity = lambda: 7  # nothing served during the rounds

    async def main() -> list[float]:
        waits = []
        for _ in range(3):
            start = trio.current_time()
            await pusher._gather()
            waits.append(trio.current_time() - start)
            store.n -= BATCH  # the round pushed a batch
        return waits

    waits = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert waits == [GATHER_STEP, 0, 0]


class Stub:
    """Whatever the agent's constructor touches of store, cache and client."""

    token = None
    base_url = "http://127.0.0.1:9"

    def cursor(self) -> None:
        return None


def agent_pull_time(
    tmp_path: Path, hinted: dict[int, int], own_seq: int, unpulled: int = 1000
) -> float:
    """Seconds (mock clock) ``SyncAgent._pull`` waited before pulling while the drive
    served requests for 0.3 s, ``unpulled`` of our ops applied since the last pull."""
    from cairn.fs.sync.agent import SyncAgent

    agent = SyncAgent(Stub(), Stub(), Stub(), ns=1, parked_file=tmp_path / "parked")  # type: ignore[arg-type]
    agent.hints._seen.update(hinted)
    agent.pusher.own_seq = own_seq
    agent.pusher.unpulled = unpulled
    requests = 0
    agent.set_activity(lambda: requests)
    pulled_at: list[float] = []

    async def pull_once() -> int:
        pulled_at.append(trio.current_time())
        return 0

    agent.puller.pull_once = pull_once  # type: ignore[method-assign]

    async def main() -> float:
        async def serve() -> None:
            nonlocal requests
            for _ in range(300):
                requests += 1
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            start = trio.current_time()
            await agent._pull()
        return pulled_at[0] - start

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_echo_of_our_own_push_is_pulled_in_a_lull_other_changes_at_once(
    tmp_path: Path,
) -> None:
    echo = agent_pull_time(tmp_path, {1: 40}, own_seq=40)
    assert 0.3 <= echo <= 0.3 + 2 * GATHER_STEP
    assert agent_pull_time(tmp_path, {1: 41}, own_seq=40) == 0  # another device's change
    assert agent_pull_time(tmp_path, {1: 40, 2: 3}, own_seq=40) == 0  # a shared folder moved
    assert agent_pull_time(tmp_path, {}, own_seq=0) == 0  # nothing pushed yet
    # A small echo (one edit) is pulled at once: the push loop waits for that pull, and a
    # lull there would hold back the next edit's push while the user keeps working.
    assert agent_pull_time(tmp_path, {1: 40}, own_seq=40, unpulled=1) == 0
