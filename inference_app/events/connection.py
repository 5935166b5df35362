"""How the listener reaches the brokers: security options, and a sign-in check with a clear answer.

Brokers answer a failed SASL sign-in by closing the connection, and kafka-python then only
reports "socket disconnected" until its bootstrap times out. check_access signs in once
itself (TLS and SASL PLAIN/SCRAM over the Kafka protocol) and says what is wrong, naming the
setting to look at. The password is never logged: kafka-python's protocol and connection
loggers (whose debug lines show SASL tokens) are held at INFO while SASL is on.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from typing import Any

from ..config import Settings

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
TOKEN_LOGGERS = ("kafka.protocol", "kafka.net.connection", "kafka.conn")


class BrokerAccessError(Exception):
    """The brokers refused this service's credentials or certificate check; retrying will not help."""


def client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python keyword arguments for the configured security protocol."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
        for name in TOKEN_LOGGERS:
            log = logging.getLogger(name)
            if log.getEffectiveLevel() < logging.INFO:
                log.setLevel(logging.INFO)
    if protocol.endswith("SSL"):
        options["ssl_check_hostname"] = True
        if settings.kafka_ssl_cafile:
            options["ssl_cafile"] = settings.kafka_ssl_cafile
    return options


def check_access(settings: Settings, timeout: float = CHECK_TIMEOUT) -> None:
    """Raise BrokerAccessError when a bootstrap server refuses TLS or SASL; a no-op for PLAINTEXT.

    A broker that cannot be reached at all is left for the consumer to report (and retry).
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return
    refusal = None
    for server in settings.kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _sign_in(settings, host.strip("[]"), int(port), timeout)
            return
        except BrokerAccessError as exc:
            refusal = exc
        except (OSError, ValueError, struct.error):
            continue  # unreachable or not answering: the consumer's own retries cover it
    if refusal is not None:
        raise refusal


def _sign_in(settings: Settings, host: str, port: int, timeout: float) -> None:
    protocol = settings.kafka_security_protocol
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock: socket.socket = raw
        if protocol.endswith("SSL"):
            context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
            try:
                sock = context.wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                raise BrokerAccessError(
                    f"TLS: the broker's certificate was not accepted ({exc.verify_message}); "
                    "check KAFKA_SSL_CAFILE and the bootstrap host name"
                ) from None
            except ssl.SSLError as exc:
                raise BrokerAccessError(
                    f"TLS handshake with {host}:{port} failed ({exc.reason}); is this a TLS listener?"
                ) from None
        if protocol.startswith("SASL_"):
            _sasl(sock, settings, f"{host}:{port}")


def _sasl(sock: socket.socket, settings: Settings, where: str) -> None:
    from kafka.net.sasl import get_sasl_mechanism

    wanted, user = settings.kafka_sasl_mechanism, settings.kafka_sasl_username
    name = wanted.encode()
    closed = f"{where} closed the connection at the SASL handshake; is KAFKA_SECURITY_PROTOCOL right for it?"
    reply = _call(sock, SASL_HANDSHAKE, 1, struct.pack(">h", len(name)) + name, closed)
    error, count = struct.unpack(">hi", reply[:6])
    offered, pos = [], 6
    for _ in range(max(count, 0)):
        (size,) = struct.unpack(">h", reply[pos : pos + 2])
        offered.append(reply[pos + 2 : pos + 2 + size].decode(errors="replace"))
        pos += 2 + size
    if not offered:
        raise BrokerAccessError(
            f"SASL: {where} refused the SASL handshake (error code {error}); is "
            f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} right for this listener?"
        )
    if wanted not in offered:
        raise BrokerAccessError(
            f"SASL: {where} does not offer KAFKA_SASL_MECHANISM={wanted} (it offers: {', '.join(offered)})"
        )
    mechanism = get_sasl_mechanism(wanted)(
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=wanted,
        sasl_plain_username=user,
        sasl_plain_password=settings.kafka_sasl_password,
    )
    failed = f"SASL authentication as {user!r} ({wanted}) at {where} failed"
    hint = "check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
    while not mechanism.is_done():
        token = mechanism.auth_bytes()
        body = struct.pack(">i", len(token)) + token
        reply = _call(sock, SASL_AUTHENTICATE, 0, body, f"{failed}: the broker closed the connection; {hint}")
        (error,) = struct.unpack(">h", reply[:2])
        message, pos = _nullable_string(reply, 2)
        if error:
            raise BrokerAccessError(f"{failed}: {message or f'error code {error}'}; {hint}")
        (size,) = struct.unpack(">i", reply[pos : pos + 4])
        try:
            mechanism.receive(reply[pos + 4 : pos + 4 + max(size, 0)])
        except Exception as exc:  # a SCRAM server signature that does not verify
            raise BrokerAccessError(f"{failed}: the broker's answer did not verify ({exc})") from None
    if not mechanism.is_authenticated():
        raise BrokerAccessError(f"{failed}; {hint}")


def _call(sock: socket.socket, api_key: int, version: int, body: bytes, closed: str) -> bytes:
    """One request and its response (past the correlation id); BrokerAccessError(closed) on EOF."""
    client_id = b"inference-service-check"
    header = struct.pack(">hhih", api_key, version, 1, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    try:
        (size,) = struct.unpack(">i", _read(sock, 4))
        return _read(sock, size)[4:]
    except ConnectionError:
        raise BrokerAccessError(closed) from None


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _nullable_string(data: bytes, pos: int) -> tuple[str | None, int]:
    (size,) = struct.unpack(">h", data[pos : pos + 2])
    if size < 0:
        return None, pos + 2
    return data[pos + 2 : pos + 2 + size].decode(errors="replace"), pos + 2 + size
