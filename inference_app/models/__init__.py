"""SQLAlchemy models, one concept a module."""

from .api_token import ApiToken
from .dashboard_session import DashboardSession
from .heartbeat import Heartbeat
from .inference_minute import InferenceMinute
from .ingestion import DeadLetter, IngestedEvent
from .model_event import EventKind, ModelEvent
from .model_load import ModelLoad
from .replica import Replica, ReplicaStatus
from .served_model import ServedModel, utcnow
from .status import ACTIVE, Status

__all__ = [
    "ACTIVE",
    "ApiToken",
    "DashboardSession",
    "DeadLetter",
    "EventKind",
    "Heartbeat",
    "IngestedEvent",
    "InferenceMinute",
    "ModelEvent",
    "ModelLoad",
    "Replica",
    "ReplicaStatus",
    "ServedModel",
    "Status",
    "utcnow",
]
