"""The domain's exception family: each knows its HTTP status and error code."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a client may see; message is safe to show."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details or {}


class InvalidInput(ServiceError):
    status = 400
    code = "invalid_input"

    def __init__(self, message: str, field: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.field = field
        if field:
            self.details.setdefault("field", field)


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"


class ModelNotFound(ServiceError):
    status = 404
    code = "model_not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class ContainerFailed(ServiceError):
    """The model's container exited, crashed or answered garbage."""

    status = 502
    code = "container_failed"


class ImageMissing(ContainerFailed):
    code = "image_not_found"


class ModelUnreachable(ContainerFailed):
    code = "model_unreachable"


class NoAnswer(ModelUnreachable):
    """The connection closed before a single byte of answer (a stale keep-alive connection, or a
    proxy that could not reach the model's server): safe to try once more on a live instance."""


class ConnectionBroken(ContainerFailed):
    """The connection to the model broke before any answer: safe to repeat only if its instance is gone."""


class EngineUnavailable(ServiceError):
    status = 503
    code = "engine_unavailable"


class NoCapacity(ServiceError):
    status = 503
    code = "no_capacity"


class OwnerLimitReached(ServiceError):
    status = 429
    code = "owner_limit"


class QueueFull(ServiceError):
    status = 503
    code = "queue_full"


class StartTimeout(ServiceError):
    status = 504
    code = "start_timeout"


class InferenceTimeout(ServiceError):
    status = 504
    code = "inference_timeout"
