"""Helpers for the tests that talk to real Kafka brokers.

The shared broker is the one `make test` provisions (TEST_KAFKA_BOOTSTRAP_SERVERS). Tests that
stop a broker, or need one that requires SASL, start a PrivateBroker of their own: scripts/kafka.sh
on free ports with its data in a temporary directory, stopped by the script's watcher when
this test process exits, however it exits.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import wait_for  # noqa: F401  (test_kafka.py imports it from here)

BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS", "")
KAFKA_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kafka.sh"


def require_kafka() -> str:
    if not BOOTSTRAP:
        pytest.fail("TEST_KAFKA_BOOTSTRAP_SERVERS is not set: run the suite with `make test`, which starts a broker")
    return BOOTSTRAP


def fresh_topics(bootstrap: str | None = None) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "kafka_bootstrap_servers": bootstrap or BOOTSTRAP,
        "kafka_topic_uploaded": f"test-{tag}.model.uploaded",
        "kafka_topic_deleted": f"test-{tag}.model.deleted",
        "kafka_group_id": f"test-{tag}",
    }


def create_topics(settings: dict[str, str], partitions: int = 3, **security) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(
        bootstrap_servers=settings["kafka_bootstrap_servers"], request_timeout_ms=20_000, **security
    )
    try:
        admin.create_topics(
            [
                NewTopic(settings["kafka_topic_uploaded"], partitions, 1),
                NewTopic(settings["kafka_topic_deleted"], partitions, 1),
            ]
        )
    finally:
        admin.close()


def producer(bootstrap: str | None = None, **security):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap or BOOTSTRAP, acks="all", linger_ms=5, batch_size=65536, retries=10, **security
    )


def send(prod, topic: str, event, key: str | None = None) -> None:
    value = event if isinstance(event, bytes) or event is None else json.dumps(event).encode()
    prod.send(topic, value=value, key=key.encode() if key else None)


def caught_up(settings: dict[str, str]) -> bool:
    """The consumer group has committed the end of every partition of the uploaded topic: nothing is left to read."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=20_000)
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    try:
        topic = settings["kafka_topic_uploaded"]
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        group = settings["kafka_group_id"]
        committed = admin.list_group_offsets({group: None}).get(group, {})
        ends = consumer.end_offsets(parts)
        return bool(parts) and all(p in committed and committed[p].offset == ends[p] for p in parts)
    finally:
        consumer.close()
        admin.close()


def committed_offsets(settings: dict[str, str], **security) -> int:
    """The sum of the offsets the listener's consumer group committed on the upload topic."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=settings["kafka_bootstrap_servers"], request_timeout_ms=20_000, **security
    )
    try:
        group = settings["kafka_group_id"]
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings["kafka_topic_uploaded"])


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class PrivateBroker:
    """A broker of this test process's own (security: 'plaintext' or 'sasl')."""

    state_dir: Path
    security: str = "plaintext"
    host: str = "127.0.0.1"  # where it listens and what it advertises

    def __post_init__(self) -> None:
        self.port, self.controller_port, self.ssl_port, self.tls_port = free_ports(4)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update(
            KAFKA_SECURITY=self.security,
            KAFKA_HOST=self.host,
            KAFKA_TEST_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            KAFKA_SSL_PORT=str(self.ssl_port),
            KAFKA_TLS_PORT=str(self.tls_port),
            KAFKA_STATE_DIR=str(self.state_dir),
            KAFKA_OWNER_PID=str(os.getpid()),
            KAFKA_HEAP_OPTS="-Xms128m -Xmx384m",
        )
        return env

    def _script(self, command: str) -> str:
        done = subprocess.run(
            ["bash", str(KAFKA_SCRIPT), command], env=self._env(), capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"scripts/kafka.sh {command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def client_env(self) -> dict[str, str]:
        """(sasl) bootstrap servers, the client user's name and password, the CA file."""
        return dict(line.split("=", 1) for line in self._script("client-env").splitlines() if "=" in line)
