"""A model's lifecycle: the only code that changes a model's state or lease.

    transitions  the state machine (TRANSITIONS), claims and leases: every write of a state
    starting     ensure_ready: one start per model across processes, waiting under the cap
    stopping     stop, finish, stop_if_idle
    eviction     the least recently used idle model makes room under the cap
    reconciling  vanished instances, adoption, abandoned claims (report_unreachable, reconcile_model)
    decisions    the verdicts (idle, reconcile) as pure functions of facts

Jobs and views gather facts and call one of the operations re-exported here.
"""

from __future__ import annotations

from .reconciling import Report, reconcile_model, report_unreachable
from .starting import Readiness, ensure_ready, instance_spec, request_start, set_keep_warm
from .stopping import stop, stop_if_idle
from .transitions import endpoint_of

__all__ = [
    "Readiness",
    "Report",
    "endpoint_of",
    "ensure_ready",
    "instance_spec",
    "reconcile_model",
    "report_unreachable",
    "request_start",
    "set_keep_warm",
    "stop",
    "stop_if_idle",
]
