"""A model's lifecycle: the only code that changes a model's state or lease.

    transitions  the state machine (TRANSITIONS), claims and leases: every write of a state
    starting     ensure_ready: one start per model across processes, waiting under the cap
    stopping     stop, finish, stop_if_idle
    eviction     fair share makes room under the cap: an extra replica first, else a model's last one
    scaling      replicas of a running model: grow, start_replica, take_out, finish_drains, settle
    reconciling  vanished instances, adoption, abandoned claims, strays (reconcile_model, remove_unowned)
    decisions    the verdicts (idle, reconcile, admission, scaling) as pure functions of facts

Jobs and views gather facts and call one of the operations re-exported here.
"""

from __future__ import annotations

from .reconciling import Report, reconcile_model, remove_unowned, report_unreachable
from .scaling import Growth, ReplicaClaim, finish_drains, grow, settle, start_replica, take_out
from .starting import Readiness, ensure_ready, instance_spec, request_start, set_keep_warm
from .stopping import stop, stop_if_idle
from .transitions import endpoint_of

__all__ = [
    "Growth",
    "Readiness",
    "ReplicaClaim",
    "Report",
    "endpoint_of",
    "ensure_ready",
    "finish_drains",
    "grow",
    "instance_spec",
    "reconcile_model",
    "remove_unowned",
    "report_unreachable",
    "request_start",
    "set_keep_warm",
    "settle",
    "start_replica",
    "stop",
    "stop_if_idle",
    "take_out",
]
