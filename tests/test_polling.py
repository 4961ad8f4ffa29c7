"""The poll schedule: never faster than the provider allows, and as seldom as what is known allows."""

from __future__ import annotations

from runner.polling import CAP_FRACTION, Schedule, first_delay

FLOOR = 5.0  # Runway asks for 5 s between polls


def test_no_wait_is_shorter_than_the_providers_minimum():
    assert first_delay(FLOOR, None) == FLOOR
    assert first_delay(FLOOR, (2.0, 3.0)) == FLOOR  # a model faster than the floor is still polled at the floor
    schedule = Schedule(FLOOR, (60.0, 100.0), started=0.0)
    assert schedule.next(0.999, 50.0) >= FLOOR  # progress says it ends in a moment
    schedule.next(0.5, 60.0)
    assert schedule.next(0.999, 61.0) >= FLOOR
    assert Schedule(FLOOR, None, started=0.0).next(None, 0.1) >= FLOOR


def test_reported_progress_points_the_next_poll_at_the_end():
    # A task that runs from 0 s to 80 s, reporting its progress: after two readings the runner
    # looks again just after 80 s, not every 5 s until then.
    schedule = Schedule(FLOOR, (60.0, 100.0), started=0.0)
    now = first_delay(FLOOR, (60.0, 100.0))  # 48 s: 0.8x the typical latency
    now += schedule.next(now / 80, now)
    now += schedule.next(now / 80, now)
    assert 80.0 <= now <= 80.0 * 1.1


def test_without_progress_the_waits_grow_but_stay_a_fraction_of_the_time_run():
    schedule = Schedule(FLOOR, (60.0, 100.0), started=0.0)
    now, waits = 60.0, []
    while now < 600.0:
        wait = schedule.next(None, now)
        assert wait <= max(FLOOR, CAP_FRACTION * now)
        waits.append(wait)
        now += wait
    assert waits[0] == 10.0  # a quarter of the measured spread of latencies
    assert waits == sorted(waits) and waits[-1] > 5 * waits[0]
