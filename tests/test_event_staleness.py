"""The staleness rule of Kafka events (newer occurred_at wins), applied through ingest.apply_batch
on the real PostgreSQL registry; test_kafka.py drives the same path through a real broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from conftest import ECHO
from sqlalchemy import select

from inference_app.events.contract import Deletion, Position, Upload
from inference_app.events.ingest import apply_batch
from inference_app.extensions import db
from inference_app.models import IngestedEvent, ServedModel
from inference_app.services.context import context
from inference_app.services.registry import register_model
from inference_app.services.validation import validate_registration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OFFSETS = count()


def at(minutes: int | None) -> datetime | None:
    return None if minutes is None else T0 + timedelta(minutes=minutes)


def upload(rev: str, minutes: int | None, name: str = "churn") -> Upload:
    body = {"user_id": "alice", "model_name": name, "image": ECHO, "metadata": {"rev": rev}}
    registration = validate_registration(body, context().settings)
    return Upload(Position("uploads", 0, next(OFFSETS)), registration, f"up-{rev}-{name}", at(minutes))


def deletion(minutes: int | None, name: str = "churn") -> Deletion:
    return Deletion(Position("deletions", 0, next(OFFSETS)), "alice", name, None, None, at(minutes))


def outcomes() -> list[tuple[str, str]]:
    rows = db.session.scalars(select(IngestedEvent).order_by(IngestedEvent.offset))
    return [(row.event_id, row.outcome) for row in rows if row.kind == "model.uploaded"]


def held(name: str = "churn") -> ServedModel:
    model = db.session.scalar(select(ServedModel).where(ServedModel.model_name == name))
    db.session.refresh(model)
    return model


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield
        db.session.rollback()


def test_in_one_batch_each_event_is_judged_against_the_ones_before_it(ctx):
    result = apply_batch([upload("2", 2), upload("1", 1), upload("3", 3), upload("3b", 3)])
    assert (result.applied, result.stale) == (3, 1)
    assert outcomes() == [
        ("up-2-churn", "applied"),
        ("up-1-churn", "stale"),
        ("up-3-churn", "applied"),
        ("up-3b-churn", "applied"),
    ]
    model = held()
    assert model.meta == {"rev": "3b"} and model.event_occurred_at == at(3)  # equally new: the later one


def test_an_older_event_than_the_registry_holds_changes_nothing_nor_does_an_untimed_one(ctx):
    apply_batch([upload("5", 5)])
    result = apply_batch([upload("untimed", None), upload("3", 3)])
    assert (result.applied, result.stale) == (0, 2)
    assert outcomes()[-2:] == [("up-untimed-churn", "stale"), ("up-3-churn", "stale")]
    stale = db.session.scalar(select(IngestedEvent).where(IngestedEvent.event_id == "up-3-churn"))
    assert stale.model_id is None
    model = held()
    assert model.meta == {"rev": "5"} and model.event_occurred_at == at(5)


def test_untimed_events_apply_in_order_where_nothing_timed_is_known(ctx):
    result = apply_batch([upload("u1", None), upload("u2", None)])
    assert (result.applied, result.stale) == (2, 0)
    assert held().meta == {"rev": "u2"}
    apply_batch([upload("7", 7)])
    assert held().meta == {"rev": "7"}  # a timed event overrides untimed data


def test_identities_are_judged_apart(ctx):
    apply_batch(
        [upload("a5", 5, name="a"), upload("b1", 1, name="b"), upload("a4", 4, name="a"), upload("b2", 2, name="b")]
    )
    assert held("a").meta == {"rev": "a5"} and held("b").meta == {"rev": "b2"}


def test_a_deletion_older_than_the_registry_holds_changes_nothing(ctx):
    apply_batch([upload("5", 5)])
    assert apply_batch([deletion(4)]).deleted_model_ids == []
    assert held().deleted_at is None
    assert apply_batch([deletion(5)]).deleted_model_ids == [held().id]
    model = held()
    assert model.deleted_at is not None and model.event_occurred_at == at(5)
    apply_batch([upload("6", 6)])
    assert held().deleted_at is None
    assert apply_batch([deletion(None)]).deleted_model_ids == []  # an untimed deletion never removes a timed one
    assert held().deleted_at is None and held().event_occurred_at == at(6)


def test_an_api_registration_counts_as_dated_so_an_undated_replay_cannot_override_it(ctx):
    apply_batch([upload("1", None)])  # the model came from an undated event first
    body = {"user_id": "alice", "model_name": "churn", "image": ECHO, "metadata": {"rev": "api"}}
    model, created = register_model(body, context().settings)
    assert not created and model.meta == {"rev": "api"} and model.event_occurred_at is not None
    result = apply_batch([upload("replayed", None)])
    assert (result.applied, result.stale) == (0, 1)
    assert held().meta == {"rev": "api"}, "an undated replay overrode the owner's own API registration"
    later = datetime.now(UTC) + timedelta(seconds=1)
    applied = apply_batch(
        [Upload(Position("uploads", 0, next(OFFSETS)), upload("new", None).registration, "up-new", later)]
    )
    assert applied.applied == 1 and held().meta == {"rev": "new"}  # a dated event newer than the API write applies


def test_an_api_registration_applies_even_when_the_held_event_time_is_ahead_of_this_clock(ctx):
    ahead = datetime.now(UTC) + timedelta(seconds=120)  # within the allowed skew
    apply_batch([Upload(Position("uploads", 0, next(OFFSETS)), upload("ahead", None).registration, "up-ahead", ahead)])
    body = {"user_id": "alice", "model_name": "churn", "image": ECHO, "metadata": {"rev": "api"}}
    model, _ = register_model(body, context().settings)
    assert model.meta == {"rev": "api"} and held().event_occurred_at >= ahead
