"""Helpers for the tests that run on the real one-node cluster of scripts/kubernetes.sh (`make test` starts it).

TEST_KUBECONFIG is the cluster's admin kubeconfig; the test images are imported into its
containerd, so pods run with imagePullPolicy Never and a missing image fails at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from waiting import wait_for

KUBECONFIG = os.environ.get("TEST_KUBECONFIG", "")
NAMESPACE = "default"


def require_cluster() -> str:
    if not KUBECONFIG:
        pytest.fail("TEST_KUBECONFIG is not set: run the suite with `make test`, which starts the cluster")
    return KUBECONFIG


def kube_settings(**extra) -> dict:
    """Settings for a KubernetesRuntime on the test cluster."""
    return {
        "runtime": "kubernetes",
        "kubeconfig": KUBECONFIG,
        "kube_namespace": NAMESPACE,
        "kube_image_pull_policy": "Never",
        "kube_schedule_timeout_seconds": 2.0,
        **extra,
    }


def admin():
    """An API client for the test itself (to look, to break things, to clean up)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=require_cluster())


def delete_objects(instance: str, namespace: str = NAMESPACE) -> None:
    """Everything the runtime made for a service instance: Deployments, pods, the NetworkPolicy."""
    from kubernetes import client

    from inference_app.runtime import kube_objects

    api = admin()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    selector = f"{kube_objects.INSTANCE}={instance}"
    apps.delete_collection_namespaced_deployment(namespace, label_selector=selector)
    # A ReplicaSet outlives its Deployment until the garbage collector comes, and replaces the pods
    # deleted meanwhile: delete them until none is left, or the next test meets a stray of ours.
    gone = lambda: not apps.list_namespaced_replica_set(namespace, label_selector=selector).items  # noqa: E731
    wait_for(gone, 60, f"the ReplicaSets of {instance} to go", interval=0.2)
    core.delete_collection_namespaced_pod(namespace, label_selector=selector, grace_period_seconds=0)
    left = lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items  # noqa: E731
    wait_for(left, 60, f"the pods of {instance} to go", interval=0.2)
    client.NetworkingV1Api(api).delete_collection_namespaced_network_policy(namespace, label_selector=selector)


def eventually(check: Callable[[], object], timeout: float = 30.0, what: str = "the condition"):
    """waiting.wait_for with the cluster tests' default timeout."""
    return wait_for(check, timeout, f"timed out waiting for {what}", interval=0.2)


def node_address() -> str:
    """The test cluster's node address (its API server's host): pods reach this host there."""
    import yaml

    with open(require_cluster()) as f:
        server = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
    return urlsplit(server).hostname
