"""SQLAlchemy models, one concept a module."""

from .model_event import EventKind, ModelEvent
from .served_model import ServedModel, utcnow
from .status import ACTIVE, Status

__all__ = ["ACTIVE", "EventKind", "ModelEvent", "ServedModel", "Status", "utcnow"]
