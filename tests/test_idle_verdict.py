"""The idle verdict as a pure function with an injected clock."""

from datetime import UTC, datetime, timedelta

from inference_app.models import Status
from inference_app.services.lifecycle.decisions import IDLE_GRACE as GRACE
from inference_app.services.lifecycle.decisions import should_stop

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def verdict(last_used_seconds_ago, limit=300, in_flight=0, state=Status.RUNNING, keep_warm=False):
    last_used = NOW - timedelta(seconds=last_used_seconds_ago) if last_used_seconds_ago is not None else None
    return should_stop(last_used, NOW - timedelta(hours=1), NOW, limit, in_flight, state, keep_warm)


def test_idle_past_deadline_plus_grace_stops():
    assert verdict(300 + GRACE.total_seconds())
    assert not verdict(300)


def test_in_flight_request_keeps_it_running_however_old():
    assert not verdict(10_000, in_flight=1)


def test_keep_warm_and_non_running_states_never_stop():
    assert not verdict(10_000, keep_warm=True)
    for state in (Status.STARTING, Status.STOPPING, Status.STOPPED, Status.FAILED):
        assert not verdict(10_000, state=state)


def test_never_used_counts_from_start():
    assert should_stop(None, NOW - timedelta(seconds=302), NOW, 300, 0, Status.RUNNING, False)
    assert not should_stop(None, NOW - timedelta(seconds=100), NOW, 300, 0, Status.RUNNING, False)
