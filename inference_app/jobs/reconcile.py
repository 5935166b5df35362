"""Reconciliation: make the registry and the runtime agree.

Gathers the runtime's managed instances and the models that should have some or do, then
lets the lifecycle settle each model (adopt, mark vanished, clean up abandoned claims) and
remove the instances that belong to no model.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy import select

from ..extensions import db
from ..models import ACTIVE, ServedModel, utcnow
from ..runtime import Instance
from ..services import lifecycle
from ..services.context import context

logger = logging.getLogger(__name__)


def reconcile() -> lifecycle.Report:
    """One pass; safe to run at any time and from any process."""
    runtime = context().runtime
    report = lifecycle.Report()
    observed_at = utcnow()
    by_model: dict[int, list[Instance]] = defaultdict(list)
    strays = []
    for instance in runtime.list_managed():
        (by_model[instance.model_id] if instance.model_id is not None else strays).append(instance)
    model_ids = set(
        db.session.scalars(
            select(ServedModel.id).where(
                ServedModel.status.in_([s.value for s in ACTIVE]) | ServedModel.id.in_(list(by_model))
            )
        )
    )
    db.session.commit()
    for model_id in sorted(model_ids):
        lifecycle.reconcile_model(model_id, by_model.get(model_id, []), observed_at, report)
    orphans = [i for model_id, found in by_model.items() if model_id not in model_ids for i in found]
    lifecycle.remove_unowned(strays + orphans, report)
    if report:
        logger.info(
            "reconciled: adopted %s, vanished %s, removed %s, ports updated %s",
            report.adopted,
            report.vanished,
            report.removed,
            report.ports_updated,
        )
    return report
