"""Names and namespaced labels that let us find our containers again after a restart."""

from __future__ import annotations

LABEL_NS = "io.inference-service"
MANAGED = f"{LABEL_NS}.managed"
MODEL_ID = f"{LABEL_NS}.model-id"
VERSION = f"{LABEL_NS}.version"
OWNER = f"{LABEL_NS}.user-id"
INSTANCE = f"{LABEL_NS}.instance"
REPLICA = f"{LABEL_NS}.replica"
PORT = f"{LABEL_NS}.port"  # where the model listens: read back on a Docker network, where nothing is published


def container_name(prefix: str, instance: str, model_id: int, replica: int = 0) -> str:
    """Deterministic: one name per model replica, so a restart finds it again."""
    base = f"{prefix}-{instance}-model-{model_id}"
    return base if replica == 0 else f"{base}-r{replica}"


def labels_for(instance: str, model_id: int, version: str, user_id: str, port: int, replica: int = 0) -> dict[str, str]:
    return {
        MANAGED: "true",
        INSTANCE: instance,
        MODEL_ID: str(model_id),
        REPLICA: str(replica),
        VERSION: version,
        OWNER: user_id,
        PORT: str(port),
    }


def managed_filter(instance: str, model_id: int | None = None) -> dict[str, list[str]]:
    label = [f"{MANAGED}=true", f"{INSTANCE}={instance}"]
    if model_id is not None:
        label.append(f"{MODEL_ID}={model_id}")
    return {"label": label}
