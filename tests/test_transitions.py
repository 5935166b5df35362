"""The lifecycle's state machine: its table, its writes, and that nothing else writes a state.

Pure tests: no database, no runtime.
"""

from __future__ import annotations

import ast
import pathlib
from datetime import UTC, datetime, timedelta

import pytest

from inference_app.models import ServedModel, Status
from inference_app.runtime import Endpoint
from inference_app.services.lifecycle import transitions
from inference_app.services.lifecycle.decisions import Verdict, reconcile_verdict

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "inference_app"
LIFECYCLE = PACKAGE / "services" / "lifecycle"
STATE_FIELDS = {
    "status",
    "status_changed_at",
    "lease_owner",
    "lease_expires_at",
    "keep_warm",
    "pinned_by_admin",
    "desired_replicas",  # the autoscaler's aim, and why it is held back
    "scale_note",
    # where a running model answers, and why it failed: set with the state, by the lifecycle only
    "container_id",
    "container_host",
    "host_port",
    "started_at",
    "last_error",
}

# Every edge of the machine, written out again by hand: the table must say exactly this.
EXPECTED_EDGES = {
    (Status.STOPPED, Status.STARTING),
    (Status.STOPPED, Status.RUNNING),
    (Status.FAILED, Status.STARTING),
    (Status.FAILED, Status.STOPPED),
    (Status.FAILED, Status.RUNNING),
    (Status.STARTING, Status.RUNNING),
    (Status.STARTING, Status.FAILED),
    (Status.STARTING, Status.STOPPING),
    (Status.STARTING, Status.STOPPED),
    (Status.STARTING, Status.STARTING),
    (Status.RUNNING, Status.STOPPING),
    (Status.RUNNING, Status.STOPPED),
    (Status.RUNNING, Status.FAILED),
    (Status.STOPPING, Status.STOPPED),
    (Status.STOPPING, Status.FAILED),
    (Status.STOPPING, Status.STOPPING),
}


def model(state: Status, **fields) -> ServedModel:
    return ServedModel(id=1, status=state.value, **{"keep_warm": False, **fields})


def test_the_table_names_every_state_and_exactly_the_expected_edges():
    assert set(transitions.TRANSITIONS) == set(Status)
    edges = {(a, b) for a, targets in transitions.TRANSITIONS.items() for b in targets}
    assert edges == EXPECTED_EDGES


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("target", list(Status))
def test_move_follows_the_table(current, target):
    row = model(current)
    if (current, target) in EXPECTED_EDGES:
        transitions.move(row, target, NOW)
        assert row.state is target and row.status_changed_at == NOW
    else:
        with pytest.raises(transitions.IllegalTransition):
            transitions.move(row, target, NOW)
        assert row.state is current


def test_stopping_forgets_where_it_ran_and_who_held_it():
    row = model(Status.RUNNING, container_id="abc", container_host="h", host_port=1234, keep_warm=True)
    row.lease_owner, row.lease_expires_at = "x", NOW
    transitions.move(row, Status.STOPPED, NOW, error="gone")
    assert (row.container_id, row.container_host, row.host_port) == (None, None, None)
    assert (row.lease_owner, row.lease_expires_at, row.keep_warm) == (None, None, False)
    assert row.last_error == "gone"


def test_a_claim_sets_state_owner_and_lease_together():
    row = model(Status.STOPPED, last_error="old")
    transitions.claim(row, Status.STARTING, "host:1", 60, NOW)
    assert row.state is Status.STARTING and row.lease_owner == "host:1"
    assert row.lease_expires_at == NOW + timedelta(seconds=60) + transitions.LEASE_GRACE
    assert row.last_error is None
    assert transitions.held_by(row, Status.STARTING, "host:1")
    assert not transitions.held_by(row, Status.STARTING, "host:2")
    assert transitions.busy(row, NOW) and not transitions.busy(row, row.lease_expires_at)


def test_placing_a_model_makes_it_running_at_its_endpoint():
    row = model(Status.STARTING)
    transitions.claim(row, Status.STARTING, "me", 10, NOW)
    transitions.place(row, Endpoint("127.0.0.1", 4321, "cid"), NOW, fresh_start=True)
    assert row.state is Status.RUNNING and row.started_at == NOW and row.last_used_at == NOW
    assert row.lease_owner is None and row.lease_expires_at is None
    assert transitions.endpoint_of(row) == Endpoint("127.0.0.1", 4321, "cid")


def test_reconcile_verdicts():
    verdict = reconcile_verdict
    assert verdict(Status.STARTING, busy=True, moved_since_observed=False, deleted=False, alive=False) is Verdict.LEAVE
    assert verdict(Status.RUNNING, busy=False, moved_since_observed=True, deleted=False, alive=False) is Verdict.LEAVE
    assert verdict(Status.RUNNING, busy=False, moved_since_observed=False, deleted=False, alive=False) is (
        Verdict.VANISHED
    )
    assert verdict(Status.RUNNING, busy=False, moved_since_observed=False, deleted=True, alive=True) is (
        Verdict.CLEAN_UP
    )
    assert verdict(Status.STOPPING, busy=False, moved_since_observed=False, deleted=False, alive=True) is (
        Verdict.CLEAN_UP
    )
    assert verdict(Status.STOPPED, busy=False, moved_since_observed=False, deleted=False, alive=True) is Verdict.ADOPT
    assert verdict(Status.RUNNING, busy=False, moved_since_observed=False, deleted=False, alive=True) is Verdict.KEEP


def _written_fields(node: ast.AST) -> list[str]:
    """The state or lease fields one node writes: `row.status = ...` (also += and annotated),
    `setattr(row, "status", ...)`, and SQL `.values(status=...)` / `.values({"status": ...})`."""
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [t.attr for t in targets if isinstance(t, ast.Attribute) and t.attr in STATE_FIELDS]
    if not isinstance(node, ast.Call):
        return []
    func = node.func
    if isinstance(func, ast.Name) and func.id == "setattr" and len(node.args) > 1:
        name = node.args[1]
        return [name.value] if isinstance(name, ast.Constant) and name.value in STATE_FIELDS else []
    if isinstance(func, ast.Attribute) and func.attr == "values":
        keys = [k.arg for k in node.keywords]
        keys += [k.value for a in node.args if isinstance(a, ast.Dict) for k in a.keys if isinstance(k, ast.Constant)]
        return [k for k in keys if k in STATE_FIELDS]
    return []


def _state_writes(path: pathlib.Path) -> list[str]:
    """Writes of a model's state, lease or endpoint fields in one source file."""
    return [
        f"{path.relative_to(PACKAGE)}:{node.lineno} .{field}"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        for field in _written_fields(node)
    ]


def test_only_the_lifecycle_writes_a_state_or_a_lease():
    writers = [w for path in PACKAGE.rglob("*.py") if LIFECYCLE not in path.parents for w in _state_writes(path)]
    assert writers == []
    assert _state_writes(LIFECYCLE / "transitions.py")  # the check itself can see a write


@pytest.mark.parametrize(
    "source",
    [
        "row.status = 1",
        "row.lease_owner += 'x'",
        "setattr(row, 'host_port', 1)",
        "update(ServedModel).values(status='stopped')",
        "insert(t).values({'lease_expires_at': None})",
    ],
)
def test_the_guard_sees_every_kind_of_write(source):
    assert [field for node in ast.walk(ast.parse(source)) for field in _written_fields(node)]
