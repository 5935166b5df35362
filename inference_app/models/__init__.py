"""SQLAlchemy models, one concept a module."""

from .inference_minute import InferenceMinute
from .model_event import EventKind, ModelEvent
from .served_model import ServedModel, utcnow
from .status import ACTIVE, Status

__all__ = ["ACTIVE", "EventKind", "InferenceMinute", "ModelEvent", "ServedModel", "Status", "utcnow"]
