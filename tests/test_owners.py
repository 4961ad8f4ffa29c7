"""Liveness without comparing clocks: the kernel where it is provably shared, else a beat counter
watched on the observer's own monotonic clock."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from runner.owners import Identity, Liveness, process_start


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _remote(beat: int, registered_at: float) -> dict:
    """An owner on another machine: no shared kernel, its own wall clock."""
    return {"id": "far", "host": "elsewhere", "pid": 1, "boot_id": "other-boot", "pid_ns": "pid:[1]", "started": "5",
            "beat": beat, "gone": 0, "registered_at": registered_at}


def test_a_remote_owner_is_judged_by_its_beats_on_the_observers_clock():
    clock = Clock()
    live = Liveness(Identity.current(), clock=clock, lease_s=30)
    # Its clock runs 180 s behind ours: that changes nothing, only whether its counter moves.
    assert live.alive(_remote(1, registered_at=0.0))
    clock.now += 29
    assert live.alive(_remote(1, registered_at=0.0))
    clock.now += 20
    assert live.alive(_remote(2, registered_at=0.0))  # it beat: alive, and the lease starts again
    clock.now += 29
    assert live.alive(_remote(2, registered_at=0.0))
    clock.now += 2
    assert not live.alive(_remote(2, registered_at=0.0))  # 31 s of our time without a beat


def test_a_remote_owner_just_seen_is_presumed_alive_until_its_lease_passes():
    clock = Clock()
    live = Liveness(Identity.current(), clock=clock, lease_s=30)
    stale = _remote(7, registered_at=-10_000.0)  # a wall clock far in the past says nothing
    assert live.alive(stale)
    clock.now += 31
    assert not live.alive(stale)


def test_gone_or_unknown_owners_are_dead():
    live = Liveness(Identity.current())
    assert not live.alive(None)
    assert not live.alive({**_remote(1, 0.0), "gone": 1})


@pytest.mark.skipif(not Identity.current().started, reason="no /proc: the kernel check is not available here")
def test_on_the_same_kernel_the_pid_and_its_start_time_decide():
    me = Identity.current()
    live = Liveness(me)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {**dataclasses.asdict(me), "id": "sleeper", "pid": sleeper.pid, "started": process_start(sleeper.pid),
                 "beat": 0, "gone": 0}
        assert live.alive(owner)
        assert not live.alive({**owner, "started": "1"})  # the same pid, another process: reused
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not live.alive(owner)  # its beat never moved, but the kernel says it is gone: no wait
