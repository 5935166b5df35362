#!/usr/bin/env bash
# A real one-node Kubernetes for development and tests, built from source (no binary downloads).
#
#   scripts/kubernetes.sh build           apt packages, Go build of kube-apiserver, -controller-manager,
#                                         -scheduler, kubelet, kube-proxy, and a local pause image
#                                         (about 5 min on 2 cores cold, seconds when cached)
#   scripts/kubernetes.sh up              build if needed, then start containerd, etcd and the control
#                                         plane and wait for the node to be Ready; a running cluster is
#                                         reused, a dead one (kill -9, reboot) is cleaned up first
#   scripts/kubernetes.sh down            stop everything `up` started and undo its traces (including the
#                                         host sysctls the kubelet and kube-proxy change, put back)
#   scripts/kubernetes.sh import IMAGE..  copy images from the Docker engine (docker save, read-only) or
#                                         from docker-archive files into the cluster's containerd
#   scripts/kubernetes.sh status          exit 0 if the cluster answers and its node is Ready
#   scripts/kubernetes.sh env             print KUBECONFIG=... (for eval) and the addresses
#
# The cluster has its own containerd (own socket, root and state; never the Docker engine's),
# etcd on 127.0.0.1, and the API server and kubelet on a private address put on `lo`
# (KUBE_NODE_IP, 10.250.0.1). Pods get 10.244.0.0/24 on the bridge infkube0 and Services
# 10.96.0.0/16 through kube-proxy (iptables); both answer from this host. No cluster DNS.
# A local image NAME:TAG appears to containerd as docker.io/library/NAME:TAG (docker.io/NAME:TAG
# when NAME has a slash); pods use imagePullPolicy IfNotPresent or Never (there is no registry).
#
# Environment:
#   INFERENCE_CACHE_DIR  cache root (default $HOME/.cache/inference-service); this script uses
#                        $CACHE/kubernetes: go/ (module and build caches), bin-<version>/, images/,
#                        and run/ (certificates, etcd, logs, pid files; removed by `down`)
#   KUBE_VERSION         Kubernetes version to build (default v1.34.4; 1.35+ refuses cgroup v1)
#   KUBE_NODE_IP         the node's private address on lo (default 10.250.0.1)
#   KUBE_UP_TIMEOUT      seconds to wait for each component (default 120)
#
#   KUBE_GO_TOOLCHAIN    the Go release fetched from the Go module proxy (golang.org/toolchain) into
#                        $CACHE/kubernetes/toolchain when PATH has no Go >= 1.24 (default 1.24.4)
#
# Requires: root, python3, curl, openssl, iptables; Go >= 1.24 is used from PATH (or /usr/local/go)
# when there, else fetched (Debian's golang is too old).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${INFERENCE_CACHE_DIR:-$HOME/.cache/inference-service}"
KDIR="$CACHE/kubernetes"
VERSION="${KUBE_VERSION:-v1.34.4}"
STAGING="v0.${VERSION#v1.}"                      # k8s.io/api etc. are tagged v0.<minor>.<patch>
GODIR="$KDIR/go"
BIN="$KDIR/bin-$VERSION"
IMAGES="$KDIR/images"
RUN="$KDIR/run"
STATE=/run/inference-kube                         # sockets and containerd state (tmpfs)
SOCK="$STATE/containerd.sock"
PKI="$RUN/pki"
KUBECONFIG_FILE="$PKI/admin.kubeconfig"
NODE_IP="${KUBE_NODE_IP:-10.250.0.1}"
NODE=inference-node
BRIDGE=infkube0
CNI_NETWORK=inference-kube
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
CGROUP_ROOT=inference-kube                        # pods' cgroups: /sys/fs/cgroup/*/inference-kube
ETCD_PORT=12379
PAUSE_IMAGE=k8s.local/pause:3.10
TIMEOUT="${KUBE_UP_TIMEOUT:-120}"
# what `up` writes; a running cluster made with another is started again. 2: the CNI firewall
# plugin, which lets pods reach pods through the FORWARD chain that Docker sets to DROP
CLUSTER_CONFIG=2
GO_TOOLCHAIN="${KUBE_GO_TOOLCHAIN:-1.24.4}"       # fetched only when PATH has no Go >= 1.24
# host settings the kubelet and kube-proxy change: saved by `up`, put back by `down`
HOST_SYSCTLS="vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet"
SAVED_SYSCTLS="$KDIR/host-sysctls"
COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
STAGING_MODULES="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client
  csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
  pod-security-admission sample-apiserver"

log() { echo "kubernetes.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { echo "usage: $0 build|up|down|import IMAGE...|status|env" >&2; exit 2; }

with_lock() {
    mkdir -p "$KDIR"
    exec 9>"$KDIR/.lock"
    flock -w 900 9 || die "could not lock $KDIR/.lock"
}

apt_install() {
    local made=""
    # keep Debian's maintainer scripts from starting a system containerd or etcd
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; } \
        || { [[ -n $made ]] && rm -f /usr/sbin/policy-rc.d; die "apt-get install $* failed"; }
    [[ -n $made ]] && rm -f /usr/sbin/policy-rc.d
    return 0
}

# ---- build ----------------------------------------------------------------------------------

go_env() {
    export GOPATH="$GODIR/path" GOMODCACHE="$GODIR/mod" GOCACHE="$GODIR/cache"
    export GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
}

go_recent() {
    command -v go >/dev/null || return 1
    local v
    v="$(go env GOVERSION 2>/dev/null)"; v="${v#go}"
    [[ -n $v && "$(printf '%s\n1.24\n' "$v" | sort -V | head -1)" == 1.24 ]]
}

# Go itself as a module: the Go module proxy serves every release as golang.org/toolchain (what
# GOTOOLCHAIN=auto downloads), so a machine without Go >= 1.24 gets one from there, cached.
fetch_go() {
    local arch proxy module dir tmp
    case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) die "no Go toolchain for $(uname -m)" ;; esac
    proxy="${GOPROXY:-https://proxy.golang.org}"; proxy="${proxy%%[,|]*}"
    [[ $proxy == http* ]] || proxy=https://proxy.golang.org
    module="v0.0.1-go$GO_TOOLCHAIN.linux-$arch"
    dir="$KDIR/toolchain/go$GO_TOOLCHAIN"
    if [[ ! -x $dir/bin/go ]]; then
        log "no Go >= 1.24 on PATH: fetching go$GO_TOOLCHAIN from the Go module proxy (golang.org/toolchain@$module)"
        mkdir -p "$KDIR/toolchain"
        tmp="$(mktemp -d "$KDIR/toolchain/.fetch.XXXXXX")"
        curl -fsSL --retry 3 -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/$module.zip" \
            || { rm -rf "$tmp"; die "could not fetch golang.org/toolchain@$module from $proxy"; }
        python3 -m zipfile -e "$tmp/go.zip" "$tmp/x"
        # a module zip keeps no file modes
        chmod +x "$tmp/x/golang.org/toolchain@$module"/bin/* "$tmp/x/golang.org/toolchain@$module"/pkg/tool/*/*
        rm -rf "$dir" && mv "$tmp/x/golang.org/toolchain@$module" "$dir" && rm -rf "$tmp"
    fi
    PATH="$dir/bin:$PATH"
}

check_go() {
    command -v go >/dev/null || [[ ! -x /usr/local/go/bin/go ]] || PATH="$PATH:/usr/local/go/bin"  # the upstream tarball's place
    go_recent || fetch_go
    go_recent || die "the Go at $(command -v go) does not work or is older than 1.24"
}

write_wrapper_module() {
    local dir="$GODIR/wrap" m
    mkdir -p "$dir"
    {
        printf 'module inferencekube\n\ngo 1.24.0\n\ngodebug default=go1.24\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$VERSION"
        for m in $STAGING_MODULES; do printf '\tk8s.io/%s => k8s.io/%s %s\n' "$m" "$m" "$STAGING"; done
        echo ')'
    } >"$dir/go.mod.new"
    if ! cmp -s "$dir/go.mod.new" "$dir/go.mod" 2>/dev/null; then
        mv "$dir/go.mod.new" "$dir/go.mod"
        rm -f "$dir/go.sum"
    else
        rm -f "$dir/go.mod.new"
    fi
}

binaries_current() {
    local c
    [[ -f "$BIN/.built" && -x "$BIN/pause" ]] || return 1
    for c in $COMPONENTS; do [[ -x "$BIN/$c" ]] || return 1; done
}

cmd_build() {
    local t0=$SECONDS c ld="-s -w" pkg minor
    if ! command -v etcd >/dev/null || [[ ! -x /usr/lib/cni/bridge ]] || ! command -v conntrack >/dev/null \
        || ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then
        log "installing etcd-server, containerd, runc, containernetworking-plugins, conntrack (apt)"
        apt_install etcd-server containerd runc containernetworking-plugins conntrack iptables iproute2
    fi
    if binaries_current && [[ -f "$IMAGES/pause.tar" ]]; then
        log "binaries for $VERSION already built in $BIN"
        return 0
    fi
    check_go
    go_env
    write_wrapper_module
    cd "$GODIR/wrap"
    log "fetching modules for k8s.io/kubernetes $VERSION (Go module proxy; cached in $GOMODCACHE)"
    # shellcheck disable=SC2046
    go get $(for c in $COMPONENTS; do echo "k8s.io/kubernetes/cmd/$c@$VERSION"; done) >/dev/null 2>&1 \
        || go get $(for c in $COMPONENTS; do echo "k8s.io/kubernetes/cmd/$c@$VERSION"; done)
    minor="$(echo "$VERSION" | cut -d. -f2)"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld="$ld -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
    done
    log "compiling $COMPONENTS (modules ready after $((SECONDS - t0))s)"
    mkdir -p "$BIN.tmp"
    # shellcheck disable=SC2046
    nice -n 10 go build -tags=notest,grpcnotrace -ldflags="$ld" -o "$BIN.tmp/" \
        $(for c in $COMPONENTS; do echo "k8s.io/kubernetes/cmd/$c"; done)
    log "compiled in $((SECONDS - t0))s; building the pause image"
    mkdir -p "$GODIR/pause" "$IMAGES"
    cp "$SCRIPT_DIR/kubernetes/pause.go" "$GODIR/pause/main.go"
    printf 'module pause\n\ngo 1.24\n' >"$GODIR/pause/go.mod"
    (cd "$GODIR/pause" && go build -ldflags='-s -w' -o "$BIN.tmp/pause" .)
    python3 "$SCRIPT_DIR/kubernetes/image-archive.py" "$IMAGES/pause.tar" "$PAUSE_IMAGE" /pause 65535:65535 \
        "$BIN.tmp/pause:/pause"
    echo "$VERSION" >"$BIN.tmp/.built"
    rm -rf "$BIN"
    mv "$BIN.tmp" "$BIN"
    log "built Kubernetes $VERSION in $((SECONDS - t0))s into $BIN"
}

# ---- processes, pid files and leftovers -----------------------------------------------------

# pid_of NAME: the pid in run/NAME.pid if that process is alive and still ours.
pid_of() {
    local f="$RUN/$1.pid" pid cmdline
    [[ -f $f ]] || return 1
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # a recycled pid is not ours: the command line must name our binary or config
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
    [[ $cmdline == *"$KDIR"* || $cmdline == *"$STATE"* ]] || return 1
    echo "$pid"
}

launch() {
    local name=$1
    shift
    setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/$name.pid"
}

stop_process() {
    local name=$1 pid i
    if pid="$(pid_of "$name")"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
}

# The processes of pods and sandboxes: everything in our kubelet's cgroup tree.
kill_pods() {
    local procs pid
    for procs in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
        [[ -d $procs ]] || continue
        while read -r pid; do
            [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
        done < <(find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null)
    done
}

# containerd shims started for our socket (their command line names it); nothing else matches
kill_shims() {
    local d cmdline
    for d in /proc/[0-9]*; do
        cmdline="$(tr '\0' ' ' 2>/dev/null <"$d/cmdline" || true)"
        if [[ $cmdline == *"-address $SOCK "* ]]; then
            kill -KILL "${d#/proc/}" 2>/dev/null || true
        fi
    done
}

remove_cgroups() {
    local c i
    for c in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
        [[ -d $c ]] || continue
        for ((i = 0; i < 20; i++)); do   # a killed process leaves its cgroup a moment later
            find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            [[ -d $c ]] || break
            sleep 0.25
        done
    done
}

unmount_ours() {
    local m
    # deepest first; -l: a busy mount (a netns still held) goes once it is free
    awk '{print $2}' /proc/self/mounts | { grep -E "^($RUN|$STATE)(/|$)" || true; } | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}

clean_iptables() {
    local ipt chain
    [[ -x "$BIN/kube-proxy" ]] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    for ipt in iptables ip6tables; do
        command -v $ipt >/dev/null || continue
        # chains the kubelet makes itself (kube-proxy --cleanup leaves them)
        $ipt -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
        $ipt -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
        $ipt -F KUBE-FIREWALL 2>/dev/null || true
        $ipt -X KUBE-FIREWALL 2>/dev/null || true
        for t in filter nat mangle; do
            $ipt -t $t -F KUBE-KUBELET-CANARY 2>/dev/null || true
            $ipt -t $t -X KUBE-KUBELET-CANARY 2>/dev/null || true
            $ipt -t $t -X KUBE-IPTABLES-HINT 2>/dev/null || true
        done
    done
    # the firewall plugin's chains (a pod's own rules go with its CNI DEL; the chains stay)
    iptables -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null || true
    for chain in CNI-FORWARD CNI-ADMIN; do
        iptables -F "$chain" 2>/dev/null || true
        iptables -X "$chain" 2>/dev/null || true
    done
    # the bridge plugin's masquerade chains of pods that never got their CNI DEL (kill -9)
    iptables -t nat -S POSTROUTING 2>/dev/null | { grep -F "$CNI_NETWORK" || true; } | while read -r rule; do
        chain="$(sed -n 's/.* -j \(CNI-[0-9a-f]*\).*/\1/p' <<<"$rule")"
        eval "iptables -t nat ${rule/-A/-D}" 2>/dev/null || true   # eval: the comment is quoted
        if [[ -n $chain ]]; then
            iptables -t nat -F "$chain" 2>/dev/null || true
            iptables -t nat -X "$chain" 2>/dev/null || true
        fi
    done
}

save_sysctls() {
    local key
    [[ -f $SAVED_SYSCTLS ]] && return 0   # a killed cluster's: the host's own values are in it already
    for key in $HOST_SYSCTLS; do echo "$key=$(sysctl -n "$key")"; done >"$SAVED_SYSCTLS.tmp"
    mv "$SAVED_SYSCTLS.tmp" "$SAVED_SYSCTLS"
}

restore_sysctls() {
    local key value
    [[ -f $SAVED_SYSCTLS ]] || return 0
    while IFS='=' read -r key value; do
        sysctl -qw "$key=$value" 2>/dev/null || true
    done <"$SAVED_SYSCTLS"
    rm -f "$SAVED_SYSCTLS"
}

# Anything a previous `up` left: pid files, our address on lo, the bridge, mounts, cgroups, dirs.
leftovers() {
    [[ -n "$(ls "$RUN"/*.pid 2>/dev/null)" || -d $STATE || -f $SAVED_SYSCTLS ]] && return 0
    ip -4 addr show dev lo 2>/dev/null | grep " $NODE_IP/" >/dev/null && return 0
    ip link show "$BRIDGE" >/dev/null 2>&1 && return 0
    ls -d /sys/fs/cgroup/*/"$CGROUP_ROOT" >/dev/null 2>&1 && return 0
    awk '{print $2}' /proc/self/mounts | grep -E "^($RUN|$STATE)(/|$)" >/dev/null && return 0
    return 1
}

teardown() {
    local c
    for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_process "$c"; done
    kill_pods
    kill_shims
    stop_process containerd
    unmount_ours
    clean_iptables
    ip link del "$BRIDGE" 2>/dev/null || true
    ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
    restore_sysctls
    remove_cgroups
    rm -rf "$RUN" "$STATE"
}

# ---- talking to the cluster ------------------------------------------------------------------

api() { # api PATH: GET from the API server as the admin
    curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://$NODE_IP:6443$1"
}

node_ready() {
    api "/api/v1/nodes/$NODE" | python3 -c '
import json, sys
conditions = json.load(sys.stdin).get("status", {}).get("conditions", [])
sys.exit(0 if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else 1)'
}

healthy() {
    local c
    for c in containerd etcd $COMPONENTS; do pid_of "$c" >/dev/null || return 1; done
    api /readyz >/dev/null && node_ready
}

wait_for() { # wait_for WHAT PROCESS COMMAND...: until COMMAND succeeds, while PROCESS lives
    local what=$1 process=$2 deadline=$((SECONDS + TIMEOUT))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ! pid_of "$process" >/dev/null; then
            log "$process exited while waiting for $what; last lines of $RUN/logs/$process.log:"
            tail -n 20 "$RUN/logs/$process.log" >&2 || true
            return 1
        fi
        ((SECONDS < deadline)) || { log "no $what after ${TIMEOUT}s; see $RUN/logs/$process.log"; return 1; }
        sleep 0.25
    done
}

# ---- up -------------------------------------------------------------------------------------

make_certs() {
    mkdir -p "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=inference-kube-ca" 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        sign() { # sign NAME CN ORG EXTENSIONS
            openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2${3:+/O=$3}" 2>/dev/null
            printf '%b' "$4" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 \
                -extfile "$1.ext" 2>/dev/null
        }
        names="IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:localhost,DNS:$NODE,DNS:kubernetes"
        names="$names,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        sign apiserver kube-apiserver "" "subjectAltName=$names\nextendedKeyUsage=serverAuth\n"
        sign admin admin system:masters "extendedKeyUsage=clientAuth\n"
        sign kubelet "system:node:$NODE" system:nodes "extendedKeyUsage=clientAuth\n"
        sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "extendedKeyUsage=clientAuth\n"
        for user in admin kubelet; do
            cat >"$user.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: inference-kube, cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}}]
users: [{name: $user, user: {client-certificate: "$PKI/$user.crt", client-key: "$PKI/$user.key"}}]
contexts: [{name: inference-kube, context: {cluster: inference-kube, user: $user}}]
current-context: inference-kube
EOF
        done
    )
}

write_configs() {
    mkdir -p "$RUN/cni" "$RUN/containerd"
    cat >"$RUN/containerd/config.toml" <<EOF
# Generated by scripts/kubernetes.sh: the cluster's own containerd (the Docker engine's is left alone).
version = 2
root = "$RUN/containerd/root"
state = "$STATE/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  # root here may lack CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe" when the kubelet asks for oom_score_adj -998
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni"
EOF
    cat >"$RUN/cni/10-$CNI_NETWORK.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "$CNI_NETWORK", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$RUN/cni-ipam"}},
  {"type": "firewall", "backend": "iptables"},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
    echo "$CLUSTER_CONFIG" >"$RUN/cluster-config"
    cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: "$PKI/ca.crt"}}
authorization: {mode: Webhook}
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failCgroupV1: false            # the hosts here are cgroup v1; 1.34 still allows it when asked
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
tlsCertFile: $PKI/apiserver.crt
tlsPrivateKeyFile: $PKI/apiserver.key
imageGCHighThresholdPercent: 100   # imported images cannot be pulled again: never collect them
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
EOF
}

start_cluster() {
    local c
    mkdir -p "$RUN/logs" "$STATE" "$RUN/kubelet"
    ip -4 addr show dev lo | grep " $NODE_IP/" >/dev/null || ip addr add "$NODE_IP/32" dev lo || return 1
    for c in /sys/fs/cgroup/*/; do   # the kubelet wants its cgroup root to exist in every hierarchy
        [[ $c == */unified/ ]] || mkdir -p "$c$CGROUP_ROOT"
    done
    if [[ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]]; then   # a new cpuset is empty until given its parent's
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.mems"
    fi
    save_sysctls || return 1
    make_certs || return 1
    write_configs || return 1
    launch containerd containerd --config "$RUN/containerd/config.toml"
    wait_for containerd containerd ctr --address "$SOCK" version || return 1
    ctr --address "$SOCK" -n k8s.io images import "$IMAGES/pause.tar" >/dev/null || return 1
    launch etcd etcd --name inference-kube --data-dir "$RUN/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
        --initial-cluster "inference-kube=http://127.0.0.1:$((ETCD_PORT + 1))"
    wait_for etcd etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health" || return 1
    launch kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC --allow-privileged=false \
        --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP,Hostname --enable-admission-plugins=NodeRestriction \
        --profiling=false
    wait_for "API server" kube-apiserver api /readyz || return 1
    launch kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_FILE" \
        --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
        --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
        --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
    launch kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_FILE" \
        --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
        --bind-address=127.0.0.1 --leader-elect=false --profiling=false
    launch kubelet "$BIN/kubelet" --config="$RUN/kubelet.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
        --root-dir="$RUN/kubelet" --hostname-override="$NODE" --node-ip="$NODE_IP"
    launch kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG_FILE" --hostname-override="$NODE" \
        --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --conntrack-max-per-core=0 --iptables-localhost-nodeports=false \
        --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
    wait_for "Ready node" kubelet node_ready || return 1
    wait_for "default ServiceAccount" kube-controller-manager api /api/v1/namespaces/default/serviceaccounts/default || return 1
}

cmd_up() {
    local t0=$SECONDS
    [[ $(id -u) -eq 0 ]] || die "must run as root (mounts, cgroups, iptables, an address on lo)"
    with_lock
    cmd_build
    if healthy && [[ "$(cat "$RUN/cluster-config" 2>/dev/null)" == "$CLUSTER_CONFIG" ]]; then
        log "already running (node $NODE Ready); KUBECONFIG=$KUBECONFIG_FILE"
        return 0
    fi
    healthy && log "running with an older configuration (not $CLUSTER_CONFIG): starting it again"
    if leftovers; then
        log "cleaning up what a previous cluster left (stopped or killed)"
        teardown
    fi
    # (errexit does not hold inside a function called as a condition: each step returns 1 itself)
    if ! start_cluster; then
        log "start failed; logs are in $RUN/logs (kept until the next up or down)"
        exit 1
    fi
    log "cluster up in $((SECONDS - t0))s; KUBECONFIG=$KUBECONFIG_FILE"
}

cmd_down() {
    with_lock
    if leftovers; then
        teardown
        log "down"
    else
        log "not running"
    fi
}

# ---- images, status, env --------------------------------------------------------------------

cmd_import() {
    local image t0
    [[ $# -gt 0 ]] || usage
    pid_of containerd >/dev/null || die "the cluster is not up (scripts/kubernetes.sh up)"
    for image in "$@"; do
        t0=$SECONDS
        if [[ -f $image ]]; then
            ctr --address "$SOCK" -n k8s.io images import "$image" >/dev/null
        else
            docker image inspect "$image" >/dev/null 2>&1 || die "no image $image on the Docker engine"
            docker save "$image" | ctr --address "$SOCK" -n k8s.io images import - >/dev/null
        fi
        log "imported $image ($((SECONDS - t0))s)"
    done
}

cmd_status() {
    if healthy; then
        echo "kubernetes: running, node $NODE Ready, API https://$NODE_IP:6443, KUBECONFIG=$KUBECONFIG_FILE"
        return 0
    fi
    echo "kubernetes: not running"
    return 1
}

cmd_env() {
    echo "KUBECONFIG=$KUBECONFIG_FILE"
    echo "KUBE_API=https://$NODE_IP:6443"
    echo "KUBE_CONTAINERD_SOCKET=$SOCK"
}

case "${1:-}" in
    build) [[ $# -eq 1 ]] || usage; with_lock; cmd_build ;;
    up) [[ $# -eq 1 ]] || usage; cmd_up ;;
    down) [[ $# -eq 1 ]] || usage; cmd_down ;;
    import) shift; cmd_import "$@" ;;
    status) [[ $# -eq 1 ]] || usage; cmd_status ;;
    env) [[ $# -eq 1 ]] || usage; cmd_env ;;
    *) usage ;;
esac
