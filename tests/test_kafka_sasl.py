"""The listener against a real broker that requires SASL (PLAIN and SCRAM, over plaintext and TLS):
right credentials register events; wrong ones are reported clearly, without a crash loop."""

import logging
import subprocess

import pytest
from conftest import ECHO, built_app
from kafka_support import PrivateBroker, create_topics, fresh_topics, producer, send, wait_for

from inference_app.config import ConfigError, Settings
from inference_app.events.listener import KafkaListener
from inference_app.services.context import context


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    """A private broker whose SASL_PLAINTEXT and SASL_SSL listeners require SASL, plus a TLS-only
    (SSL) one; its users and CA made on start."""
    broker = PrivateBroker(tmp_path_factory.mktemp("kafka-sasl"), security="sasl")
    broker.start()
    broker.env = broker.client_env()
    yield broker
    broker.stop()


def security(broker, protocol: str, mechanism: str, password: str | None = None, cafile: str | None = None) -> dict:
    """(settings overrides, kafka-python options) for a client of the broker."""
    env = broker.env
    if protocol == "SSL":  # TLS without SASL: no user, the CA only
        settings = {
            "kafka_bootstrap_servers": env["KAFKA_TLS_BOOTSTRAP_SERVERS"],
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": cafile or env["KAFKA_SSL_CAFILE"],
        }
        return settings, {"security_protocol": "SSL", "ssl_cafile": env["KAFKA_SSL_CAFILE"]}
    bootstrap = env["KAFKA_SSL_BOOTSTRAP_SERVERS"] if protocol == "SASL_SSL" else env["KAFKA_SASL_BOOTSTRAP_SERVERS"]
    settings = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": env["KAFKA_SASL_USERNAME"],
        "kafka_sasl_password": password or env["KAFKA_SASL_PASSWORD"],
    }
    options = {  # the test's own clients: SCRAM never sends the password, so any in a log is the service's
        "security_protocol": protocol,
        "sasl_mechanism": "SCRAM-SHA-256" if mechanism == "PLAIN" else mechanism,
        "sasl_plain_username": env["KAFKA_SASL_USERNAME"],
        "sasl_plain_password": env["KAFKA_SASL_PASSWORD"],
    }
    if protocol == "SASL_SSL":
        settings["kafka_ssl_cafile"] = cafile or env["KAFKA_SSL_CAFILE"]
        options["ssl_cafile"] = env["KAFKA_SSL_CAFILE"]
    return settings, options


@pytest.mark.parametrize(
    "protocol, mechanism",
    [
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "PLAIN"),
        ("SSL", None),
    ],
)
def test_events_are_registered_through_a_broker_that_requires_sasl(
    database, docker_client, sasl_broker, protocol, mechanism, caplog
):
    settings, options = security(sasl_broker, protocol, mechanism)
    topics = fresh_topics(settings["kafka_bootstrap_servers"])
    create_topics(topics, **options)
    with built_app(docker_client, **{**topics, **settings}) as app:
        # someone debugging turns kafka-python's logs up: its protocol lines would show a PLAIN password
        caplog.set_level(logging.DEBUG, logger="kafka")
        with app.app_context():
            listener = KafkaListener(app, context().settings)
        listener.start()
        try:
            prod = producer(settings["kafka_bootstrap_servers"], **options)
            send(prod, topics["kafka_topic_uploaded"], {"user_id": "sasl", "model_name": "m", "image": ECHO})
            prod.flush()
            prod.close()
            client = app.test_client()
            [model] = wait_for(lambda: client.get("/api/models").get_json()["items"], 30, "the event never arrived")
            assert model["user_id"] == "sasl" and listener.state == "connected"
        finally:
            listener.stop()
    password = settings.get("kafka_sasl_password") or sasl_broker.env["KAFKA_SASL_PASSWORD"]
    leaked = [
        (r.name, r.getMessage()[:300])
        for r in caplog.records
        if r.name.startswith("kafka") and password in r.getMessage()
    ]
    assert not leaked, leaked


def test_wrong_password_is_reported_as_an_authentication_error_without_a_crash_loop(
    database, docker_client, sasl_broker, caplog
):
    secret = "not-the-password-" + "x" * 8
    settings, _ = security(sasl_broker, "SASL_PLAINTEXT", "PLAIN", password=secret)
    topics = fresh_topics(settings["kafka_bootstrap_servers"])
    caplog.set_level(logging.DEBUG)  # even at debug level the password is never logged
    with built_app(docker_client, **{**topics, **settings}) as app:
        runner = app.extensions["background"]
        runner.start()  # the background role, as the worker process runs it
        try:
            client = app.test_client()
            kafka = wait_for(
                lambda: (state := client.get("/readyz").get_json()["checks"]["background"]["kafka"])["state"]
                == "unauthorized"
                and state,
                60,
                "/readyz never reported the refused credentials",
            )
            assert "SASL authentication as 'client' (PLAIN)" in kafka["reason"]
            assert "KAFKA_SASL_PASSWORD" in kafka["reason"]
            listener = runner.listener
            assert listener._thread.is_alive() and listener.restarts == 0
        finally:
            runner.shutdown()
    assert any(
        r.levelno == logging.ERROR and "SASL authentication as 'client'" in r.getMessage() for r in caplog.records
    )
    assert not any(secret in r.getMessage() for r in caplog.records), "the password reached the log"
    assert secret not in repr(Settings(**settings))


def test_an_untrusted_broker_certificate_is_reported(database, docker_client, sasl_broker, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not the broker's CA"]
        + ["-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca)],
        check=True,
        capture_output=True,
    )
    settings, _ = security(sasl_broker, "SASL_SSL", "PLAIN", cafile=str(other_ca))
    with built_app(docker_client, **{**fresh_topics(), **settings}) as app:
        with app.app_context():
            listener = KafkaListener(app, context().settings)
        listener.start()
        try:
            wait_for(lambda: listener.state == "unauthorized", 30, "the refused certificate was never reported")
            assert "certificate" in listener.reason and "KAFKA_SSL_CAFILE" in listener.reason
        finally:
            listener.stop()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_USERNAME is required"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD is required"),
        ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_USERNAME is set but"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        ),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE must be a readable PEM file",
        ),
        ({"EVENT_MAX_FUTURE_SKEW_SECONDS": "-1"}, "EVENT_MAX_FUTURE_SKEW_SECONDS must be at least 0"),
    ],
)
def test_kafka_security_settings_fail_fast_naming_the_variable(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env, instance_path=str(tmp_path))


def test_kafka_security_settings_are_read_from_the_environment(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": " pass word ",
            "KAFKA_SSL_CAFILE": str(ca),
        },
        instance_path=str(tmp_path),
    )
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert settings.kafka_sasl_password == " pass word "  # spaces may belong to a password
    assert "pass word" not in repr(settings)
