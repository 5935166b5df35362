"""Autoscaling and balancing as pure functions: verdicts from observed load with the clock passed in,
replica slots under fair share, the load meter, and the per-model settings' validation.

No services needed.
"""

from datetime import UTC, datetime, timedelta

import pytest

from inference_app.config import Settings
from inference_app.errors import InvalidInput
from inference_app.models import Replica, ReplicaStatus, ServedModel, Status
from inference_app.runtime import Endpoint
from inference_app.services.balancing import least_loaded
from inference_app.services.lifecycle import transitions
from inference_app.services.lifecycle.decisions import (
    Replicas,
    Sample,
    ScalePolicy,
    Slot,
    admit,
    scale_verdict,
)
from inference_app.services.load import LoadMeter
from inference_app.services.validation import validate_registration

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=3)
DELAY = timedelta(seconds=30)
POLICY = ScalePolicy(min_replicas=0, max_replicas=4, target_concurrency=4)


def samples(*loads: float, every: float = 1.0, until: datetime = NOW) -> list[Sample]:
    """One sample a second (by default) ending at `until`, oldest first."""
    count = len(loads)
    return [Sample(until - timedelta(seconds=every * (count - 1 - i)), load) for i, load in enumerate(loads)]


def verdict(loads, ready=1, starting=0, draining=0, policy=POLICY, last_up_at=None, every=1.0):
    return scale_verdict(
        samples(*loads, every=every), NOW, Replicas(ready, starting, draining), policy, WINDOW, DELAY, last_up_at
    )


# -- scaling up ------------------------------------------------------------------------------------
def test_load_above_target_through_the_window_adds_enough_replicas_at_once():
    up = verdict([16, 16, 16, 16])
    assert (up.add, up.remove, up.desired) == (3, 0, 4)


def test_a_short_burst_is_not_enough():
    assert verdict([0, 0, 16, 16]).add == 0  # above target for two of the window's seconds only
    assert verdict([16, 16]).add == 0  # history shorter than the window


def test_load_at_or_below_target_adds_nothing():
    assert verdict([4, 4, 4, 4]).add == 0
    assert verdict([8, 8, 8, 8], ready=2).add == 0


def test_scale_up_stops_at_max_replicas_and_counts_replicas_already_starting():
    capped = verdict([100] * 4, policy=ScalePolicy(0, 3, 4))
    assert (capped.add, capped.desired) == (2, 3)
    starting = verdict([16] * 4, ready=1, starting=3)
    assert (starting.add, starting.desired) == (0, 4)  # a herd adds replicas once
    more = verdict([16] * 4, ready=1, starting=1)
    assert (more.add, more.desired) == (2, 4)


def test_at_least_one_more_replica_while_each_is_above_target():
    assert verdict([5, 5, 5, 5]).add == 1  # ceil(5 / 4) = 2


def test_min_replicas_holds_regardless_of_load():
    held = verdict([0] * 40, policy=ScalePolicy(2, 4, 4))
    assert (held.add, held.desired) == (1, 2)
    assert verdict([0] * 40, ready=2, policy=ScalePolicy(2, 4, 4)).remove == 0


def test_nothing_while_no_replica_is_ready():
    assert not verdict([50] * 40, ready=0, starting=1).changes


# -- scaling down ----------------------------------------------------------------------------------
def test_low_load_through_the_delay_removes_the_replicas_it_leaves_idle():
    down = verdict([1] * 31, ready=3)
    assert (down.add, down.remove, down.desired) == (0, 2, 1)
    assert verdict([5] * 31, ready=3).remove == 1  # two replicas carry 5 within the target
    assert verdict([0] * 31, ready=4, policy=ScalePolicy(2, 4, 4)).remove == 2  # down to min_replicas


def test_the_next_scale_down_is_announced_for_when_the_delay_will_have_passed():
    quiet = verdict([16] * 20 + [0] * 5, ready=3)  # the last busy second was 5 s ago
    assert quiet.remove == 0 and quiet.down_due_at == NOW + DELAY - timedelta(seconds=5)
    assert verdict([16] * 25, ready=3).down_due_at is None  # still busy: nothing is due
    after_up = verdict([0] * 40, ready=3, last_up_at=NOW - timedelta(seconds=10))
    assert after_up.down_due_at == NOW + timedelta(seconds=20) - timedelta(microseconds=1)


def test_load_that_needs_every_replica_keeps_them():
    assert verdict([9] * 31, ready=3).remove == 0  # 9 > 4 x 2: two would be above target
    assert verdict([8] * 31, ready=3).remove == 1  # two replicas carry 8 at the target


def test_not_before_the_delay_and_not_after_a_recent_scale_up():
    assert verdict([0] * 20, ready=3).remove == 0  # 20 s of history, the delay is 30 s
    assert verdict([0] * 31, ready=3, last_up_at=NOW - timedelta(seconds=10)).remove == 0
    assert verdict([0] * 31, ready=3, last_up_at=NOW - timedelta(seconds=31)).remove == 2


def test_one_at_a_time_and_never_the_last_replica():
    assert verdict([0] * 31, ready=2, draining=1).remove == 0  # the previous one is still draining
    assert verdict([0] * 31, ready=2, starting=1).remove == 0
    assert verdict([0] * 31, ready=1).remove == 0  # from one to none is the idle stop
    assert verdict([0] * 31, ready=2, policy=ScalePolicy(2, 4, 4)).remove == 0  # min_replicas


def test_max_replicas_lowered_removes_the_surplus():
    lowered = verdict([50] * 4, ready=3, policy=ScalePolicy(0, 1, 4))
    assert (lowered.remove, lowered.desired) == (2, 1)
    assert verdict([50] * 4, ready=2, draining=1, policy=ScalePolicy(0, 1, 4)).remove == 0


# -- balancing -------------------------------------------------------------------------------------
def test_least_loaded_first_and_equals_in_turn():
    assert least_loaded([3, 0, 1], turn=0) == [1, 2, 0]
    assert least_loaded([0, 0, 0], turn=0) == [0, 1, 2]
    assert least_loaded([0, 0, 0], turn=1) == [1, 2, 0]
    assert least_loaded([0, 5, 0], turn=1) == [2, 0, 1]


# -- the load meter ----------------------------------------------------------------------------------
def test_the_meter_averages_requests_in_flight_over_the_interval():
    meter = LoadMeter(clock_start=100.0)
    meter.accrue(7, 0, 100.0)  # one request in at t=100
    meter.accrue(7, 1, 100.5)  # a second at t=100.5
    meter.accrue(7, 2, 101.0)  # one out at t=101: one stays
    assert meter.averages({7: 1}, 102.0) == {7: pytest.approx((0.5 * 1 + 0.5 * 2 + 1.0 * 1) / 2)}
    assert meter.averages({7: 1}, 103.0) == {7: pytest.approx(1.0)}  # still one in flight
    assert meter.busy_until(7) == 103.0
    meter.accrue(7, 1, 103.5)  # it leaves at t=103.5
    assert meter.averages({}, 104.0) == {7: pytest.approx(0.5)}
    assert meter.busy_until(7) == 103.5  # the load's report is timed by when it ended
    assert meter.averages({}, 105.0) == {7: 0.0}  # the drop to nothing is reported once
    assert meter.busy_until(7) is None
    assert meter.averages({}, 106.0) == {}


# -- replicas under fair share ------------------------------------------------------------------------
def slot(model_id, owner, minutes_ago, replica=0, extra=False, pinned=False, running=True):
    return Slot(model_id, owner, running, pinned, False, NOW - timedelta(minutes=minutes_ago), replica, extra)


def test_every_replica_counts_against_the_cap_and_the_owner_limit():
    alice = [slot(1, "alice", 1), slot(1, "alice", 1, replica=1, extra=True)]
    assert not admit("bob", alice + [slot(2, "bob", 5)], cap=3, per_owner=3).free
    assert admit("alice", alice, cap=3, per_owner=2).reason == "owner_limit"


def test_extra_replicas_go_before_anyones_last_one():
    slots = [
        slot(1, "alice", 90),  # the least recently used model of all
        slot(2, "alice", 1),
        slot(2, "alice", 1, replica=1, extra=True),
        slot(2, "alice", 1, replica=2, extra=True),
    ]
    order = [(s.model_id, s.replica) for s in admit("bob", slots, cap=4, per_owner=4).candidates]
    assert order == [(2, 2), (2, 1), (1, 0), (2, 0)]  # the highest replica first


def test_replicas_within_min_replicas_count_as_pinned():
    slots = [slot(1, "alice", 1, pinned=True), slot(1, "alice", 1, replica=1, extra=True, pinned=True)]
    assert admit("alice", slots, cap=2, per_owner=2).candidates == ()


# -- the replica state machine ---------------------------------------------------------------------------
def model_with(*states: ReplicaStatus) -> ServedModel:
    model = ServedModel(id=1, status=Status.RUNNING.value, keep_warm=False, desired_replicas=len(states))
    for number, state in enumerate(states):
        row = Replica(replica=number, status=state.value, status_changed_at=NOW)
        if state is not ReplicaStatus.STARTING:
            transitions.relocate(model, row, Endpoint("127.0.0.1", 5000 + number, f"c{number}"))
        model.replicas.append(row)
    transitions.sync_endpoint(model)
    return model


def test_replica_moves_follow_their_table():
    model = model_with(ReplicaStatus.READY, ReplicaStatus.STARTING)
    first, second = model.replicas
    with pytest.raises(transitions.IllegalTransition):
        transitions.drain(model, second, NOW)  # a starting replica takes no traffic, so it cannot drain
    transitions.replica_ready(model, second, Endpoint("127.0.0.1", 6001, "c1"), NOW)
    transitions.drain(model, second, NOW)
    assert [r.state for r in transitions.ready_replicas(model)] == [ReplicaStatus.READY]
    transitions.revive(model, second, NOW)
    assert len(transitions.ready_replicas(model)) == 2


def test_the_model_answers_at_its_lowest_ready_replica():
    model = model_with(ReplicaStatus.READY, ReplicaStatus.READY)
    assert model.host_port == 5000
    transitions.drop_replica(model, model.replicas[0])
    assert model.host_port == 5001 and model.container_id == "c1"


def test_claims_take_the_lowest_free_number_and_a_stop_drops_every_replica():
    model = model_with(ReplicaStatus.READY, ReplicaStatus.READY, ReplicaStatus.READY)
    transitions.drop_replica(model, model.replicas[1])
    claimed = transitions.claim_replica(model, "host:1", 60, NOW)
    assert claimed.replica == 1 and claimed.state is ReplicaStatus.STARTING and claimed.lease_owner == "host:1"
    transitions.move(model, Status.STOPPED, NOW)
    assert model.replicas == [] and model.desired_replicas == 0


# -- the settings, as the API and the Kafka events give them -------------------------------------------
BASE = {"user_id": "alice", "model_name": "m", "image": "inference-test/echo:1"}


def test_scaling_settings_default_to_one_replica_and_target_four():
    reg = validate_registration(BASE, Settings())
    assert (reg.min_replicas, reg.max_replicas, reg.target_concurrency) == (0, 1, 4)
    reg = validate_registration({**BASE, "min_replicas": 1, "max_replicas": 3, "target_concurrency": 2}, Settings())
    assert (reg.min_replicas, reg.max_replicas, reg.target_concurrency) == (1, 3, 2)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"max_replicas": 0}, "max_replicas", "between 1 and 8"),
        ({"max_replicas": 9}, "max_replicas", "between 1 and 8"),
        ({"max_replicas": "2"}, "max_replicas", "whole number"),
        ({"min_replicas": -1}, "min_replicas", "between 0 and 8"),
        ({"min_replicas": 2}, "min_replicas", "must not exceed max_replicas (1)"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas", "must not exceed max_replicas (2)"),
        ({"target_concurrency": 0}, "target_concurrency", "between 1 and"),
        ({"target_concurrency": 1.5}, "target_concurrency", "whole number"),
    ],
)
def test_bad_scaling_settings_name_the_field(fields, field, words):
    with pytest.raises(InvalidInput) as caught:
        validate_registration({**BASE, **fields}, Settings())
    assert caught.value.field == field and words in caught.value.message


def test_the_global_bound_comes_from_configuration():
    settings = Settings(max_replicas_per_model=20)
    assert validate_registration({**BASE, "max_replicas": 20}, settings).max_replicas == 20
    with pytest.raises(InvalidInput, match="between 1 and 20"):
        validate_registration({**BASE, "max_replicas": 21}, settings)


# -- the autoscaler's timing ---------------------------------------------------------------------------
def test_the_autoscaler_looks_again_when_a_scale_down_falls_due():
    from apscheduler.schedulers.background import BackgroundScheduler

    from inference_app.jobs.background import DUE_MARGIN, BackgroundRunner
    from inference_app.models import utcnow

    scheduler = BackgroundScheduler()
    scheduler.add_job(lambda: None, "interval", seconds=60, id="autoscale")
    scheduler.start(paused=True)
    try:
        runner = BackgroundRunner.__new__(BackgroundRunner)  # only its scheduler is used here
        runner._scheduler = scheduler
        due = utcnow() + timedelta(seconds=5)
        runner._look_again_at("autoscale", due)
        assert scheduler.get_job("autoscale").next_run_time == due + DUE_MARGIN
        runner._look_again_at("autoscale", due + timedelta(seconds=120))  # after the next run: no change
        assert scheduler.get_job("autoscale").next_run_time == due + DUE_MARGIN
        runner._look_again_at("autoscale", None)
        assert scheduler.get_job("autoscale").next_run_time == due + DUE_MARGIN
    finally:
        scheduler.shutdown(wait=False)


def test_load_samples_are_timed_by_their_reports_and_not_repeated():
    from collections import deque

    from inference_app.jobs.scale import _observe

    history = deque()
    _observe(history, (16.0, NOW - timedelta(seconds=0.3)), NOW)
    _observe(history, (16.0, NOW - timedelta(seconds=0.3)), NOW + timedelta(seconds=1))  # the same report
    _observe(history, None, NOW + timedelta(seconds=2))  # no fresh report: nothing in flight, now
    assert history == deque([Sample(NOW - timedelta(seconds=0.3), 16.0), Sample(NOW + timedelta(seconds=2), 0.0)])


# -- the snapshot cache ----------------------------------------------------------------------------------
def test_an_expired_snapshot_is_read_again_by_one_caller_while_the_others_keep_it(monkeypatch):
    from inference_app.services import model_view
    from inference_app.services.model_view import ModelView, RunningModels

    clock = [100.0]
    monkeypatch.setattr(model_view.time, "monotonic", lambda: clock[0])
    view = ModelView(1, "alice", "m", "1", Status.RUNNING.value, "/predict", 8080, "127.0.0.1", "c1")
    cache = RunningModels(ttl=1.0)
    cache.put((1, None, None), view)
    assert cache.get((1, None, None)) is view
    clock[0] = 101.2  # expired
    assert cache.get((1, None, None)) is None  # this caller reads the model again
    assert cache.get((1, None, None)) is view  # the others go on with the snapshot meanwhile
    clock[0] = 101.6  # past the grace: the refresh never came, so the next caller reads it
    assert cache.get((1, None, None)) is None
    cache.abandon((1, None, None))  # its read failed: nothing stale is served any more
    assert cache.get((1, None, None)) is None
    cache.put((1, None, None), view)
    cache.put((1, None, None), ModelView(1, "alice", "m", "1", Status.STOPPED.value, "/predict", None, None, None))
    assert cache.get((1, None, None)) is None  # a model seen stopped is not served from the cache
