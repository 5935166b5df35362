"""Names and namespaced labels that let us find our containers again after a restart."""

from __future__ import annotations

LABEL_NS = "io.inference-service"
MANAGED = f"{LABEL_NS}.managed"
MODEL_ID = f"{LABEL_NS}.model-id"
VERSION = f"{LABEL_NS}.version"
OWNER = f"{LABEL_NS}.user-id"
INSTANCE = f"{LABEL_NS}.instance"
PORT = f"{LABEL_NS}.port"  # where the model listens: read back on a Docker network, where nothing is published


def container_name(prefix: str, instance: str, model_id: int) -> str:
    """Deterministic: one container name per model, so a restart finds it again."""
    return f"{prefix}-{instance}-model-{model_id}"


def labels_for(instance: str, model_id: int, version: str, user_id: str, port: int) -> dict[str, str]:
    return {
        MANAGED: "true",
        INSTANCE: instance,
        MODEL_ID: str(model_id),
        VERSION: version,
        OWNER: user_id,
        PORT: str(port),
    }


def managed_filter(instance: str) -> dict[str, list[str]]:
    return {"label": [f"{MANAGED}=true", f"{INSTANCE}={instance}"]}
