#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM) for development and tests.
#
#   scripts/kafka.sh start       fetch the jars if needed, format storage if needed, start, wait until ready
#   scripts/kafka.sh stop        stop the broker started by `start` (data is kept)
#   scripts/kafka.sh status      exit 0 if the broker is running (or KAFKA_BOOTSTRAP_SERVERS is reachable)
#   scripts/kafka.sh bootstrap   print the bootstrap servers (host:port)
#   scripts/kafka.sh client-env  (KAFKA_SECURITY=sasl) print the client settings of that broker as
#                                shell assignments: bootstrap servers, user, password, CA file
#
# Environment:
#   KAFKA_BOOTSTRAP_SERVERS  use this existing Kafka instead: `start`/`status` only check that it is
#                            reachable over TCP, `stop` does nothing, `bootstrap` prints it.
#   KAFKA_HOST               the address the broker listens on and advertises (default 127.0.0.1;
#                            e.g. the test cluster's node address, for pods to reach it)
#   KAFKA_TEST_PORT          broker port on KAFKA_HOST (default 59092)
#   KAFKA_CONTROLLER_PORT    KRaft controller port on KAFKA_HOST (default KAFKA_TEST_PORT+1)
#   KAFKA_HEAP_OPTS          JVM heap options (default -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS           extra JVM options (default empty)
#   KAFKA_START_TIMEOUT      seconds to wait for readiness (default 60)
#   KAFKA_SECURITY           plaintext (default) or sasl: a broker whose SASL listeners require
#                            SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): SASL_PLAINTEXT on
#                            KAFKA_TEST_PORT and SASL_SSL on KAFKA_SSL_PORT, plus TLS alone (SSL) on
#                            KAFKA_TLS_PORT, with a CA and a server certificate made by openssl.
#                            Users and passwords are generated on the first start and kept (mode 600)
#                            in the state directory; `client-env` prints them.
#   KAFKA_SSL_PORT           SASL_SSL port of a sasl broker (default KAFKA_TEST_PORT+2)
#   KAFKA_TLS_PORT           SSL port of a sasl broker: TLS without SASL, for clients of protocol SSL
#                            (default KAFKA_TEST_PORT+3)
#   KAFKA_STATE_DIR          data, logs, pid file, credentials (default $CACHE/kafka/<port>, and
#                            $CACHE/kafka/<port>-sasl for a sasl broker)
#   KAFKA_OWNER_PID          stop the broker when this process exits, even when it dies without
#                            cleaning up (tests' private brokers: a crashed run leaves no broker behind)
#   INFERENCE_CACHE_DIR      cache root (default $HOME/.cache/inference-service); jars go to
#                            $CACHE/kafka-libs, the Maven repository to $CACHE/m2, and data, logs and
#                            the pid file to $CACHE/kafka/<port>/.
#
# Requires: Java 17+ (JAVA_HOME or java on PATH), Maven (first run only), python3 (readiness probe),
# openssl (sasl brokers only).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"

CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
LIBDIR="$CACHE/kafka-libs"
PORT="${KAFKA_TEST_PORT:-59092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOST="${KAFKA_HOST:-127.0.0.1}"
SECURITY="${KAFKA_SECURITY:-plaintext}"
SSL_PORT="${KAFKA_SSL_PORT:-$((PORT + 2))}"
TLS_PORT="${KAFKA_TLS_PORT:-$((PORT + 3))}"
case "$SECURITY" in
    plaintext) DEFAULT_STATE_DIR="$CACHE/kafka/$PORT" ;;
    sasl) DEFAULT_STATE_DIR="$CACHE/kafka/$PORT-sasl" ;;
    *) echo "kafka.sh: KAFKA_SECURITY must be plaintext or sasl, got '$SECURITY'" >&2; exit 2 ;;
esac
# Data dir keyed by port: the controller endpoint is part of the cluster's configuration.
STATE_DIR="${KAFKA_STATE_DIR:-$DEFAULT_STATE_DIR}"
CREDENTIALS="$STATE_DIR/credentials.env"
TLS_DIR="$STATE_DIR/tls"
OWNER_PID="${KAFKA_OWNER_PID:-}"
DATA_DIR="$STATE_DIR/data"
LOG_DIR="$STATE_DIR/logs"
PID_FILE="$STATE_DIR/kafka.pid"
PROPS="$STATE_DIR/server.properties"
LOG4J_CONF="$STATE_DIR/log4j2.properties"
OUT_FILE="$LOG_DIR/kafka.out"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
EXTRA_JVM_OPTS="${KAFKA_JVM_OPTS:-}"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status|bootstrap|client-env" >&2
    exit 2
}

# tcp_open HOST PORT: exit 0 if a TCP connection can be made within 2 s.
tcp_open() {
    # shellcheck disable=SC2016
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Any server of a comma-separated host:port list reachable?
external_reachable() {
    local item hostport host port
    local -a items
    IFS=',' read -r -a items <<<"$KAFKA_BOOTSTRAP_SERVERS"
    for item in "${items[@]}"; do
        hostport="${item// /}"
        hostport="${hostport#*://}"          # tolerate PLAINTEXT://host:port
        [[ -z "$hostport" ]] && continue
        host="${hostport%:*}"
        port="${hostport##*:}"
        host="${host#[}"; host="${host%]}"   # [::1]:9092
        if tcp_open "$host" "$port"; then
            return 0
        fi
    done
    return 1
}

# metadata_ready: the broker answers ApiVersions and a Metadata request listing >= 1 broker.
# (A raw Kafka protocol request with the Python standard library; no client library needed.)
# On a sasl broker the probe first signs in with SASL PLAIN as the admin user (credentials
# passed in the environment, never on a command line).
metadata_ready() {
    local user="" password=""
    if [[ "$SECURITY" == sasl ]]; then
        user="$KAFKA_ADMIN_USER"
        password="$KAFKA_ADMIN_PASSWORD"
    fi
    PROBE_USER="$user" PROBE_PASSWORD="$password" python3 - "$HOST" "$PORT" <<'PY' 2>/dev/null
import os, socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])

def call(sock, api_key, version, corr, body):
    client_id = b"kafka.sh"
    hdr = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    if version_is_flexible(api_key, version):
        hdr += b"\x00"  # empty tagged fields (request header v2)
    msg = hdr + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    data = recv_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise SystemExit(1)
    return data[4:]

def version_is_flexible(api_key, version):
    return api_key == 3 and version >= 9

def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit(1)
        buf += chunk
    return buf

def uvarint(data, pos):
    shift = value = 0
    while True:
        b = data[pos]; pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7

with socket.create_connection((host, port), timeout=3) as s:
    s.settimeout(3)
    # ApiVersions v0: empty body; response: error_code, [api_key, min, max].
    r = call(s, 18, 0, 1, b"")
    err, n = struct.unpack(">hi", r[:6])
    if err != 0:
        raise SystemExit(1)
    versions = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", r[6 + 6 * i: 12 + 6 * i])
        versions[k] = (lo, hi)
    user = os.environ.get("PROBE_USER", "")
    if user:
        # SaslHandshake v1 (mechanism PLAIN), then SaslAuthenticate v0 with "\0user\0password".
        mechanism = b"PLAIN"
        r = call(s, 17, 1, 3, struct.pack(">h", len(mechanism)) + mechanism)
        if struct.unpack(">h", r[:2])[0] != 0:
            raise SystemExit(1)
        token = b"\0" + user.encode() + b"\0" + os.environ["PROBE_PASSWORD"].encode()
        r = call(s, 36, 0, 4, struct.pack(">i", len(token)) + token)
        if struct.unpack(">h", r[:2])[0] != 0:
            raise SystemExit(1)
    lo, hi = versions[3]
    if lo <= 4 <= hi:
        # Metadata v4: topics=[] (empty, not null: no topic listing), allow_auto_topic_creation=false.
        r = call(s, 3, 4, 2, struct.pack(">i?", 0, False))
        n_brokers = struct.unpack(">i", r[4:8])[0]      # after throttle_time_ms
    else:
        v = max(lo, 9)
        body = b"\x01"                                   # topics: compact array, empty
        body += b"\x00"                                  # allow_auto_topic_creation=false
        if v <= 10:
            body += b"\x00"                              # include_cluster_authorized_operations (v8-10)
        body += b"\x00"                                  # include_topic_authorized_operations
        body += b"\x00"                                  # tagged fields
        r = call(s, 3, v, 2, body)
        # response header v1 has tagged fields, then throttle_time_ms
        _, pos = uvarint(r, 0)
        pos += 4
        n_brokers, pos = uvarint(r, pos)
        n_brokers -= 1
    raise SystemExit(0 if n_brokers >= 1 else 1)
PY
}

pid_alive() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: it must be our broker.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

fetch_jars() {
    local stamp want
    want="$(sha256sum "$POM" | cut -d' ' -f1)"
    stamp="$LIBDIR/.pom.sha256"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && ls "$LIBDIR"/kafka_2.13-*.jar >/dev/null 2>&1; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Kafka jars into $LIBDIR)"
    log "fetching Kafka jars with Maven into $LIBDIR ..."
    local tmp="$LIBDIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$CACHE/m2"
    # (sed strips the ANSI colour codes that Maven 3.8 prints even with -q -B)
    if ! mvn -q -B -f "$POM" -Dmaven.repo.local="$CACHE/m2" \
            dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then
        rm -rf "$tmp"
        die "mvn dependency:copy-dependencies failed"
    fi
    echo "$want" >"$tmp/.pom.sha256"
    rm -rf "$LIBDIR"
    mv "$tmp" "$LIBDIR"
}

# random_secret: 24 URL-safe characters (no quotes or spaces: they go into JAAS and properties files).
random_secret() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(18))'
}

# ensure_credentials: a sasl broker's users and passwords, generated once per state directory.
# A data directory formatted without them (a start that died half-way) is formatted again.
ensure_credentials() {
    if [[ ! -s "$CREDENTIALS" ]]; then
        rm -rf "$DATA_DIR" "$TLS_DIR"
        mkdir -p "$STATE_DIR"
        (
            umask 077
            cat >"$CREDENTIALS.tmp" <<EOF
KAFKA_ADMIN_USER=admin
KAFKA_ADMIN_PASSWORD=$(random_secret)
KAFKA_CLIENT_USER=client
KAFKA_CLIENT_PASSWORD=$(random_secret)
KAFKA_KEYSTORE_PASSWORD=$(random_secret)
EOF
        )
        mv "$CREDENTIALS.tmp" "$CREDENTIALS"
    fi
    # shellcheck disable=SC1090
    source "$CREDENTIALS"
    ensure_tls
}

# ensure_tls: a CA and a server certificate for 127.0.0.1 signed by it, in a PKCS12 keystore.
ensure_tls() {
    [[ -s "$TLS_DIR/server.p12" && -s "$TLS_DIR/ca.pem" ]] && return 0
    if ! command -v openssl >/dev/null && [[ $EUID -eq 0 ]]; then
        log "installing openssl (apt-get) for the SASL_SSL listener's certificates"
        apt-get install -y -qq openssl >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq openssl >/dev/null; }
    fi
    command -v openssl >/dev/null || die "openssl not found (needed for the SASL_SSL listener's certificates)"
    local tmp="$TLS_DIR.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    (
        umask 077
        cd "$tmp"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout ca.key -out ca.pem \
            -subj "/CN=inference-service test Kafka CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/CN=$HOST" 2>/dev/null
        printf 'subjectAltName=IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' "$HOST" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
            -extfile server.ext -out server.pem 2>/dev/null
        KEYSTORE_PASSWORD="$KAFKA_KEYSTORE_PASSWORD" openssl pkcs12 -export -in server.pem -inkey server.key \
            -certfile ca.pem -name kafka -out server.p12 -passout env:KEYSTORE_PASSWORD
        rm -f ca.key server.key server.csr ca.srl
        chmod 644 ca.pem
    ) || { rm -rf "$tmp"; die "could not make the test CA and server certificate with openssl"; }
    rm -rf "$TLS_DIR"
    mv "$tmp" "$TLS_DIR"
}

listener_config() {
    if [[ "$SECURITY" == plaintext ]]; then
        cat <<EOF
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
        return 0
    fi
    local plain scram name
    plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$KAFKA_ADMIN_USER\" password=\"$KAFKA_ADMIN_PASSWORD\" user_$KAFKA_ADMIN_USER=\"$KAFKA_ADMIN_PASSWORD\" user_$KAFKA_CLIENT_USER=\"$KAFKA_CLIENT_PASSWORD\";"
    scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
    cat <<EOF
listeners=SASL_PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SSL_PORT,SSL://$HOST:$TLS_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=SASL_PLAINTEXT://$HOST:$PORT,SASL_SSL://$HOST:$SSL_PORT,SSL://$HOST:$TLS_PORT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/server.p12
ssl.keystore.password=$KAFKA_KEYSTORE_PASSWORD
ssl.key.password=$KAFKA_KEYSTORE_PASSWORD
ssl.client.auth=none
EOF
    for name in sasl_plaintext sasl_ssl; do
        echo "listener.name.$name.plain.sasl.jaas.config=$plain"
        echo "listener.name.$name.scram-sha-256.sasl.jaas.config=$scram"
        echo "listener.name.$name.scram-sha-512.sasl.jaas.config=$scram"
    done
}

write_config() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    (
        umask 077  # a sasl broker's file holds passwords
        cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh (rewritten on every start).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
$(listener_config)
log.dirs=$DATA_DIR
num.partitions=3
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# 10 instead of 50 __consumer_offsets partitions: faster first group join and restart (test broker).
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Faster restart after an unclean exit (kill -9): the old broker incarnation is fenced after
# broker.session.timeout.ms (default 9 s) and the new one waits for that.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
num.network.threads=3
num.io.threads=4
log.retention.hours=24
log.segment.bytes=67108864
EOF
    )
    cat >"$LOG4J_CONF" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $LOG_DIR/server.log
appender.file.filePattern = $LOG_DIR/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
}

format_storage() {
    if [[ -f "$DATA_DIR/meta.properties" ]]; then
        return 0
    fi
    local cluster_id
    # Same format as `kafka.tools.StorageTool random-uuid` (base64url of 16 random bytes, not
    # starting with '-'), without paying for another JVM start.
    cluster_id="$(python3 -c 'import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break')"
    local -a scram=()
    if [[ "$SECURITY" == sasl ]]; then
        # SCRAM users live in the cluster metadata; KRaft takes the first ones at format time.
        local mechanism
        for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
            scram+=(--add-scram "$mechanism=[name=$KAFKA_CLIENT_USER,password=$KAFKA_CLIENT_PASSWORD]")
        done
    fi
    log "formatting $DATA_DIR (cluster id $cluster_id)"
    # (its output goes to a file: with SCRAM users it lists their salted keys)
    if ! "$JAVA" -cp "$LIBDIR/*" -Dlog4j2.configurationFile="$LOG4J_CONF" \
            kafka.tools.StorageTool format --config "$PROPS" --cluster-id "$cluster_id" --ignore-formatted \
            "${scram[@]}" >"$LOG_DIR/format.log" 2>&1; then
        tail -n 20 "$LOG_DIR/format.log" >&2
        die "formatting $DATA_DIR failed"
    fi
}

# watch_owner BROKER_PID: stop the broker once KAFKA_OWNER_PID is gone (a detached watcher that
# holds none of this script's files or pipes).
watch_owner() {
    local broker="$1"
    [[ -n "$OWNER_PID" ]] || return 0
    [[ "$OWNER_PID" =~ ^[0-9]+$ ]] || die "KAFKA_OWNER_PID must be a process id, got '$OWNER_PID'"
    # shellcheck disable=SC2016
    setsid bash -c '
        owner=$1 broker=$2 props=$3
        ours() { tr "\0" " " <"/proc/$broker/cmdline" 2>/dev/null | grep -qF "$props"; }
        while kill -0 "$owner" 2>/dev/null && ours; do sleep 1; done
        ours || exit 0
        kill -TERM "$broker" 2>/dev/null
        for _ in $(seq 60); do ours || exit 0; sleep 0.5; done
        kill -KILL "$broker" 2>/dev/null
    ' _ "$OWNER_PID" "$broker" "$PROPS" </dev/null >/dev/null 2>&1 9>&- &
}

wait_ready() {
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "broker exited during startup; last lines of $OUT_FILE and $LOG_DIR/server.log:"
            tail -n 20 "$OUT_FILE" >&2 || true
            tail -n 30 "$LOG_DIR/server.log" >&2 || true
            rm -f "$PID_FILE"
            return 1
        fi
        if tcp_open "$HOST" "$PORT" && metadata_ready; then
            return 0
        fi
        sleep 0.25
    done
    log "broker not ready after ${START_TIMEOUT}s (pid $pid); see $LOG_DIR/server.log"
    return 1
}

with_lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 180 9 || die "could not lock $STATE_DIR/.lock"
}

cmd_start() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        external_reachable || die "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS is not reachable"
        echo "kafka: using external $KAFKA_BOOTSTRAP_SERVERS (reachable)"
        return 0
    fi
    command -v "$JAVA" >/dev/null || die "java not found (Java 17+ needed)"
    with_lock
    local pid t0=$SECONDS
    if [[ "$SECURITY" == sasl && -s "$CREDENTIALS" ]]; then
        # shellcheck disable=SC1090
        source "$CREDENTIALS"  # the readiness probe signs in
    fi
    if pid="$(pid_alive)"; then
        wait_ready "$pid" || die "broker (pid $pid) is running but not ready"
        echo "kafka: already running pid=$pid bootstrap=$HOST:$PORT"
        return 0
    fi
    rm -f "$PID_FILE"
    local port
    for port in "$PORT" "$CONTROLLER_PORT" $([[ "$SECURITY" == sasl ]] && echo "$SSL_PORT $TLS_PORT"); do
        if tcp_open "$HOST" "$port"; then
            die "port $HOST:$port is in use by another process (not started by this script); set KAFKA_TEST_PORT or KAFKA_BOOTSTRAP_SERVERS"
        fi
    done
    fetch_jars
    if [[ "$SECURITY" == sasl ]]; then
        ensure_credentials
    fi
    write_config
    format_storage
    # shellcheck disable=SC2086
    setsid "$JAVA" $HEAP_OPTS $EXTRA_JVM_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBDIR/*" kafka.Kafka "$PROPS" >>"$OUT_FILE" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    watch_owner "$pid"
    if ! wait_ready "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$PID_FILE"
        exit 1
    fi
    echo "kafka: started pid=$pid bootstrap=$HOST:$PORT ($SECURITY) in $((SECONDS - t0))s (data $DATA_DIR, log $LOG_DIR/server.log)"
}

cmd_stop() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        echo "kafka: external $KAFKA_BOOTSTRAP_SERVERS, not stopping"
        return 0
    fi
    with_lock
    local pid i
    if ! pid="$(pid_alive)"; then
        rm -f "$PID_FILE"
        echo "kafka: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do     # up to 30 s for a clean shutdown
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still alive after 30s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    rm -f "$PID_FILE"
    echo "kafka: stopped pid=$pid"
}

cmd_status() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        if external_reachable; then
            echo "kafka: external $KAFKA_BOOTSTRAP_SERVERS reachable"
            return 0
        fi
        echo "kafka: external $KAFKA_BOOTSTRAP_SERVERS NOT reachable"
        return 1
    fi
    local pid
    if pid="$(pid_alive)"; then
        echo "kafka: running pid=$pid bootstrap=$HOST:$PORT"
        return 0
    fi
    echo "kafka: not running"
    return 1
}

cmd_bootstrap() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        echo "$KAFKA_BOOTSTRAP_SERVERS"
    else
        echo "$HOST:$PORT"
    fi
}

# client-env: what a client of the sasl broker needs (its own user, not the admin).
cmd_client_env() {
    [[ "$SECURITY" == sasl ]] || die "client-env is for KAFKA_SECURITY=sasl brokers"
    [[ -s "$CREDENTIALS" ]] || die "no credentials in $STATE_DIR: start the broker first"
    # shellcheck disable=SC1090
    source "$CREDENTIALS"
    echo "KAFKA_SASL_BOOTSTRAP_SERVERS=$HOST:$PORT"
    echo "KAFKA_SSL_BOOTSTRAP_SERVERS=$HOST:$SSL_PORT"
    echo "KAFKA_TLS_BOOTSTRAP_SERVERS=$HOST:$TLS_PORT"
    echo "KAFKA_SASL_USERNAME=$KAFKA_CLIENT_USER"
    echo "KAFKA_SASL_PASSWORD=$KAFKA_CLIENT_PASSWORD"
    echo "KAFKA_SSL_CAFILE=$TLS_DIR/ca.pem"
}

[[ $# -eq 1 ]] || usage
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    bootstrap) cmd_bootstrap ;;
    client-env) cmd_client_env ;;
    *) usage ;;
esac
