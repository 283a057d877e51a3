#!/usr/bin/env bash
# Local single-node Kubernetes for ml-endpoints, run directly on the machine.
#
#   scripts/cluster.sh up       build-or-reuse the components, start the cluster, wait Ready
#   scripts/cluster.sh down     stop it, remove its pods, network rules, mounts and state
#   scripts/cluster.sh status   what runs
#   scripts/cluster.sh build    only build-or-reuse the binaries and images (CI cache warm-up)
#
# Why upstream components and not k3s: the Go module proxy here answers 403 for every
# github.com/k3s-io/k3s version, while k8s.io/kubernetes and its staging modules are served.
# See docs/cluster.md. On a machine with Docker and `kind` on PATH (a laptop) `up` makes a kind
# cluster with kind's documented local registry instead (ML_ENDPOINTS_CLUSTER=kind|native
# forces one).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"
export GOTOOLCHAIN=local GOWORK=off

# Versions: mlendpoints/versions.env (sourced by lib.sh); COREDNS_VERSION must match
# images/coredns/go.mod (tests/unit/test_versions.py checks it).
K8S_VERSION="${ML_ENDPOINTS_K8S_VERSION:-$KUBERNETES_VERSION}"
PAUSE_REF=registry.k8s.io/pause:$PAUSE_VERSION
COREDNS_REF="ml-endpoints.local/coredns:${COREDNS_VERSION#v}"
METRICS_SERVER_REF="ml-endpoints.local/metrics-server:${METRICS_SERVER_VERSION#v}"
LOCAL_PATH_REF="ml-endpoints.local/local-path-provisioner:${LOCAL_PATH_PROVISIONER_VERSION#v}"
BUSYBOX_REF=ml-endpoints.local/busybox:debian   # local-path's helper pod (setup/teardown scripts)
NODE_NAME=ml-endpoints
POD_CIDR=10.42.0.0/24
CLUSTER_CIDR=10.42.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
BRIDGE=mle0
NODE_PORT_RANGE=30000-32767      # the API server's default, passed explicitly: the guard below uses it
LOCAL_NP_CHAIN=ML-ENDPOINTS-LOCAL-NODEPORTS
REGISTRY=127.0.0.1:5000
READY_TIMEOUT="${ML_ENDPOINTS_CLUSTER_TIMEOUT:-180}"
S3_PORT=7070                     # versitygw, on 127.0.0.1 and the node IP
S3_BUCKET=ml-endpoints-collected
S3_REGION=us-east-1

TOOLS="$ML_ENDPOINTS_CACHE/tools"
K8S_DIR="$TOOLS/kubernetes-$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
COREDNS_DIR="$TOOLS/coredns-$COREDNS_VERSION"
PAUSE_DIR="$TOOLS/pause-$PAUSE_VERSION"
METRICS_SERVER_DIR="$TOOLS/metrics-server-$METRICS_SERVER_VERSION"
LOCAL_PATH_DIR="$TOOLS/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION"
BUSYBOX_DIR="$TOOLS/busybox-image"
VERSITYGW_DIR="$TOOLS/versitygw-$VERSITYGW_VERSION"
CL="$ML_ENDPOINTS_CACHE/cluster"          # kubeconfig, PKI, configs, logs: this cluster's
KUBECONFIG_OUT="$CL/kubeconfig"
PKI="$CL/pki"
LOGS="$CL/logs"
RUN=/run/ml-endpoints                     # pid files
STATE=/var/lib/ml-endpoints               # etcd data, kubelet root, PVs, S3 data (wiped by `down`)
CTR_ROOT=/var/lib/ml-endpoints-containerd # images survive `down`: warm start
CTR_RUN=/run/ml-endpoints-containerd
CTR_SOCK="$CTR_RUN/containerd.sock"
S3_ENV="$CL/s3.env"                       # the S3 endpoint and its generated keys (0600)
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy versitygw)

ctr_() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }
kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" "$@"; }

# ---------------------------------------------------------------------------- build
# build_k8s: copy k8s.io/kubernetes out of the module cache (its go.mod replaces every
# k8s.io/* staging module with ./staging/..., which the module zip lacks), point those
# replaces at the published k8s.io/* v0.Y.Z modules of the same release, build as main module.
build_k8s() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}" src="$K8S_DIR/src" info mod date
  info=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  mod=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$info")
  # The release's time, not now: same inputs, same binaries (and `go build` skips relinking).
  date=$(sed -n 's/^\t"Info": "\(.*\)",$/\1/p' <<<"$info" | xargs cat \
    | sed -n 's/.*"Time":"\([0-9T:-]*\).*/\1Z/p')
  [ -n "$date" ] || date=1970-01-01T00:00:00Z
  [ -d "$mod" ] || die "k8s.io/kubernetes@$K8S_VERSION is not in the module cache"
  rm -rf "$src" && mkdir -p "$K8S_DIR" && cp -r "$mod" "$src" && chmod -R u+w "$src"
  rm -rf "$src/vendor" "$src/go.work" "$src/go.work.sum"
  (
    cd "$src"
    local edits=() m p c ld="-s -w" pkgs=()
    while read -r m; do
      edits+=("-replace=$m=$m@$staging")
    done < <(sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' go.mod)
    go mod edit "${edits[@]}"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
      pkgs+=("./cmd/$c")
    done
    mkdir -p "$K8S_BIN"
    CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" \
      go build -trimpath -tags providerless -ldflags "$ld" -o "$K8S_BIN/" "${pkgs[@]}"
  )
  rm -rf "$src"   # 250 MB of source; the module cache keeps the original
  printf '%s\n' "$K8S_VERSION" >"$K8S_DIR/.complete"
}

build_coredns() {
  mkdir -p "$COREDNS_DIR"
  (cd "$REPO/images/coredns" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
     -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
     -o "$COREDNS_DIR/coredns" .)
  python3 "$REPO/images/pause/image_tar.py" "$COREDNS_DIR/coredns.tar" "$COREDNS_REF" \
    --file "$COREDNS_DIR/coredns:/coredns" --port 53 >"$COREDNS_DIR/image-id"
  printf '%s\n' "$(coredns_key)" >"$COREDNS_DIR/.complete"
}
coredns_key() { cat "$REPO/images/coredns/go.mod" "$REPO/images/coredns/main.go" | sha256sum | cut -c1-16; }

build_pause() {
  mkdir -p "$PAUSE_DIR"
  gcc -Os -Wall -Wextra -Werror -static -o "$PAUSE_DIR/pause" "$REPO/images/pause/pause.c"
  strip "$PAUSE_DIR/pause"
  python3 "$REPO/images/pause/image_tar.py" "$PAUSE_DIR/pause.tar" "$PAUSE_REF" \
    --file "$PAUSE_DIR/pause:/pause" --user 65535:65535 >"$PAUSE_DIR/image-id"
  printf '%s\n' "$(pause_key)" >"$PAUSE_DIR/.complete"
}
pause_key() { sha256sum "$REPO/images/pause/pause.c" "$REPO/images/pause/image_tar.py" | sha256sum | cut -c1-16; }

# go_install DIR MODULE/PKG@VERSION: a static binary from a served Go module, built as
# `go install` does (the module's own go.mod and go.sum: none of the three has replaces).
go_install() {
  mkdir -p "$1"
  CGO_ENABLED=0 GOBIN="$1" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "$2"
}
# addon_key MODULE@VERSION: what a cached add-on was built from (and the packer's bytes).
addon_key() { { echo "$1"; cat "$REPO/images/pause/image_tar.py"; } | sha256sum | cut -c1-16; }

build_metrics_server() {
  go_install "$METRICS_SERVER_DIR" "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  python3 "$REPO/images/pause/image_tar.py" "$METRICS_SERVER_DIR/image.tar" "$METRICS_SERVER_REF" \
    --file "$METRICS_SERVER_DIR/metrics-server:/metrics-server" --user 65534:65534 \
    --port 10250 >"$METRICS_SERVER_DIR/image-id"
  addon_key "metrics-server@$METRICS_SERVER_VERSION" >"$METRICS_SERVER_DIR/.complete"
}

build_local_path() {
  go_install "$LOCAL_PATH_DIR" "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
  python3 "$REPO/images/pause/image_tar.py" "$LOCAL_PATH_DIR/image.tar" "$LOCAL_PATH_REF" \
    --file "$LOCAL_PATH_DIR/local-path-provisioner:/local-path-provisioner" \
    >"$LOCAL_PATH_DIR/image-id"
  addon_key "local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION" >"$LOCAL_PATH_DIR/.complete"
}

# The helper pod of local-path runs `sh /script/setup|teardown` (mkdir -p, rm -rf): Debian's
# static busybox as /bin/sh, /bin/mkdir and /bin/rm (busybox picks the applet from argv[0];
# the packer writes files, not links, so copies of 2 MB), and as /bin/busybox for the rest
# (`busybox wget` in the cluster tests).
build_busybox() {
  mkdir -p "$BUSYBOX_DIR"
  local a files=(); for a in sh mkdir rm busybox; do files+=(--file "/bin/busybox:/bin/$a"); done
  python3 "$REPO/images/pause/image_tar.py" "$BUSYBOX_DIR/image.tar" "$BUSYBOX_REF" \
    "${files[@]}" --entrypoint '["/bin/sh"]' --env PATH=/bin >"$BUSYBOX_DIR/image-id"
  busybox_key >"$BUSYBOX_DIR/.complete"
}
busybox_key() { cat /bin/busybox "$REPO/images/pause/image_tar.py" | sha256sum | cut -c1-16; }

build_versitygw() {
  go_install "$VERSITYGW_DIR" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  addon_key "versitygw@$VERSITYGW_VERSION" >"$VERSITYGW_DIR/.complete"
}

# build_step NAME EXPECTED CMD...: `step --expect` (its progress line every 30 s compares the
# time spent with EXPECTED, "N min", what a cold build took here).
build_step() {
  local name="$1" expect="$2"; shift 2
  step --expect "$(( ${expect% min} * 60 ))" "$name" "$@"
}

ensure_packages() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/firewall ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v openssl >/dev/null || need+=(openssl)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || need+=(busybox-static)   # local-path's helper image: a static /bin/busybox
  if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}"
  fi
}

ensure_built() {
  command -v go >/dev/null || die "go is not on PATH (the components are built from Go modules)"
  if stamp_ok "$K8S_DIR/.complete" "$K8S_VERSION"; then say "kubernetes $K8S_VERSION: cached"
  else build_step "build kubernetes $K8S_VERSION" "16 min" build_k8s; fi
  if stamp_ok "$COREDNS_DIR/.complete" "$(coredns_key)"; then say "coredns $COREDNS_VERSION: cached"
  else build_step "build coredns $COREDNS_VERSION" "6 min" build_coredns; fi
  if stamp_ok "$PAUSE_DIR/.complete" "$(pause_key)"; then say "pause image: cached"
  else step "build pause image" build_pause; fi
  if stamp_ok "$METRICS_SERVER_DIR/.complete" "$(addon_key "metrics-server@$METRICS_SERVER_VERSION")"
  then say "metrics-server $METRICS_SERVER_VERSION: cached"
  else build_step "build metrics-server $METRICS_SERVER_VERSION" "12 min" build_metrics_server; fi
  if stamp_ok "$LOCAL_PATH_DIR/.complete" \
       "$(addon_key "local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION")"
  then say "local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION: cached"
  else build_step "build local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION" "4 min" \
         build_local_path; fi
  if stamp_ok "$BUSYBOX_DIR/.complete" "$(busybox_key)"; then say "busybox helper image: cached"
  else step "build busybox helper image" build_busybox; fi
  if stamp_ok "$VERSITYGW_DIR/.complete" "$(addon_key "versitygw@$VERSITYGW_VERSION")"
  then say "versitygw $VERSITYGW_VERSION: cached"
  else build_step "build versitygw $VERSITYGW_VERSION" "3 min" build_versitygw; fi
}

# ---------------------------------------------------------------------------- helpers
pidfile() { echo "$RUN/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# start NAME CMD...: run CMD detached (own session, survives make) with its log and pid file.
# A component running with another command line (new flags after an update of this script)
# is restarted with the new one; one running with the same is left alone.
start() {
  local name="$1"; shift
  if running "$name"; then
    local pid; pid=$(cat "$(pidfile "$name")")
    if cmp -s <(printf '%s\0' "$@") "/proc/$pid/cmdline"; then
      say "$name: already running (pid $pid)"; return
    fi
    say "$name: running with other flags: restarting"
    stop_component "$name"
  fi
  mkdir -p "$RUN" "$LOGS"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$(pidfile "$name")"
  say "$name: started (pid $!, log $LOGS/$name.log)"
}

# wait_for WHAT LOGNAME CMD...: poll CMD once a second up to READY_TIMEOUT seconds; on
# timeout show the tail of LOGNAME's log and fail.
wait_for() {
  local what="$1" log="$2"; shift 2
  local t0; t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if [ "$log" != - ] && ! running "$log"; then
      printf 'error: %s exited; last lines of %s:\n' "$log" "$LOGS/$log.log" >&2
      tail -n 40 "$LOGS/$log.log" >&2; exit 1
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$READY_TIMEOUT" ]; then
      printf 'error: timed out after %ss waiting for %s\n' "$READY_TIMEOUT" "$what" >&2
      [ "$log" != - ] && { printf 'last lines of %s:\n' "$LOGS/$log.log" >&2; tail -n 40 "$LOGS/$log.log" >&2; }
      exit 1
    fi
    sleep 1
  done
  say "$what: ok after $(( $(date +%s) - t0 ))s"
}

node_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global | awk '{sub("/.*","",$4); print $4; exit}')
  [ -n "$ip" ] || die "no global IPv4 address: the API server needs one to advertise to pods"
  echo "$ip"
}

# ---------------------------------------------------------------------------- PKI
# newkey FILE: an ECDSA P-256 key (RSA keys take seconds each on a busy 2-core machine).
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# cert NAME CN [O] [SAN] [CA]: key + certificate signed by CA (default: the cluster CA).
cert() {
  local name="$1" cn="$2" org="${3:-}" san="${4:-}" ca="${5:-ca}" subj="/CN=$2"
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  newkey "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature"
    if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi; } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig FILE USER: a kubeconfig for the cert pair USER.{crt,key}, server on loopback.
kubeconfig() {
  local b64='base64 -w0'
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ml-endpoints
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $($b64 <"$PKI/$2.crt")
    client-key-data: $($b64 <"$PKI/$2.key")
contexts:
- name: ml-endpoints
  context: {cluster: ml-endpoints, user: $2}
current-context: ml-endpoints
EOF
  chmod 600 "$1"
}

pki_ok() {
  [ -f "$PKI/ca.key" ] && [ -f "$KUBECONFIG_OUT" ] && [ -f "$CL/kubelet.kubeconfig" ] \
    && openssl x509 -in "$PKI/apiserver.crt" -noout -ext subjectAltName 2>/dev/null \
       | grep -q "IP Address:$1\(,\|$\)"
}

make_pki() {
  local ip="$1"
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  newkey "$PKI/ca.key"
  openssl req -x509 -new -key "$PKI/ca.key" -out "$PKI/ca.crt" -days 365 \
    -subj "/CN=ml-endpoints-ca" 2>/dev/null
  newkey "$PKI/sa.key"
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$ip,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin ml-endpoints-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kubelet "system:node:$NODE_NAME" system:nodes
  cert kube-proxy system:kube-proxy
  local u; for u in admin controller-manager scheduler kubelet kube-proxy; do
    kubeconfig "$CL/$u.kubeconfig" "$u"
  done
  cp "$CL/admin.kubeconfig" "$KUBECONFIG_OUT"
  front_proxy_pki
}

# front_proxy_pki: the aggregation layer's pair (the API server proxies metrics.k8s.io to
# metrics-server as `front-proxy-client`, which trusts it through --requestheader-client-ca-file).
# A CA of its own, as kubeadm does: a cluster client cert must not pass for the front proxy.
# Idempotent, so a cluster made before the add-ons gets it without a new PKI.
front_proxy_pki() {
  [ -f "$PKI/front-proxy-client.crt" ] && return 0
  newkey "$PKI/front-proxy-ca.key"
  openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 365 \
    -subj "/CN=ml-endpoints-front-proxy-ca" 2>/dev/null
  cert front-proxy-client front-proxy-client "" "" front-proxy-ca
}

# ---------------------------------------------------------------------------- config
# put FILE: write stdin to FILE only if it differs. kube-proxy exits when its config file
# changes, so an `up` on a running cluster must not rewrite identical files.
put() {
  cat >"$1.new"
  if cmp -s "$1.new" "$1"; then rm -f "$1.new"; else mv -f "$1.new" "$1"; fi
}

write_configs() {
  local ip="$1"
  mkdir -p "$CL/cni" "$CL/certs.d/$REGISTRY" "$CL/certs.d/localhost:5000"
  # Our own containerd (own socket, root and state), so it never fights the Docker engine's.
  put "$CL/containerd.toml" <<EOF
version = 2
root = "$CTR_ROOT"
state = "$CTR_RUN/state"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_REF"
  # The VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below the parent's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$CTR_RUN/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CL/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CL/certs.d"
EOF
  local r; for r in "$REGISTRY" localhost:5000; do
    printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
      "$r" "$r" | put "$CL/certs.d/$r/hosts.toml"
  done
  put "$CL/cni/10-ml-endpoints.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ml-endpoints",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
EOF
  put "$CL/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs          # PID 1 is not systemd
failCgroupV1: false             # the VM has cgroup v1 only
containerRuntimeEndpoint: unix://$CTR_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: /etc/resolv.conf
readOnlyPort: 0
failSwapOn: false
healthzBindAddress: 127.0.0.1
# The only images are imported or in the local registry: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
serializeImagePulls: false
EOF
  put "$CL/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $CL/kube-proxy.kubeconfig}
conntrack: {maxPerCore: 0}       # leave nf_conntrack_max as the VM has it
iptables: {localhostNodePorts: true}   # NodePorts answer on 127.0.0.1 ...
nodePortAddresses: [127.0.0.0/8, $ip/32]  # ... and on the node IP, not on docker0 & co.
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
}

# ---------------------------------------------------------------------------- up
host_prep() {
  sysctl -qw net.ipv4.ip_forward=1
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] \
    || die "br_netfilter is missing: Services cannot be reached from pods on the bridge"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Volume mount propagation needs a shared root; this VM's / is private.
  findmnt -no PROPAGATION / | grep -q shared || mount --make-rshared /
  guard_local_nodeports
}

# guard_local_nodeports: refuse, in filter OUTPUT, a host's SYN to one of its own NodePorts
# that kube-proxy did not DNAT (Service not programmed yet, or no endpoints yet), so that
# conntrack never confirms an entry for it. Without this such a refused connection leaves a
# null-NAT conntrack entry (SYN_SENT, 120 s): kube-proxy's "no endpoints" REJECT runs in
# filter INPUT, after the loopback packet was confirmed in POSTROUTING. A later connection
# whose kernel-chosen client port equals that one matches the stale entry, skips the NAT
# rules, reaches the host itself and is refused (RST from 127.0.0.1:<nodePort>) even though
# the Service now has ready endpoints. A SYN dropped here, before the confirm, leaves no
# entry. See docs/cluster.md, "Refused connections on 127.0.0.1:<nodePort>". Idempotent.
guard_local_nodeports() {
  local rule=(-o lo -p tcp --syn --dport "${NODE_PORT_RANGE/-/:}" -m conntrack ! --ctstate DNAT
              -m comment --comment "ml-endpoints: un-DNATed SYN to a local NodePort"
              -j REJECT --reject-with tcp-reset)
  iptables -N "$LOCAL_NP_CHAIN" 2>/dev/null || true
  iptables -C "$LOCAL_NP_CHAIN" "${rule[@]}" 2>/dev/null || iptables -A "$LOCAL_NP_CHAIN" "${rule[@]}"
  iptables -C OUTPUT -j "$LOCAL_NP_CHAIN" 2>/dev/null || iptables -I OUTPUT 1 -j "$LOCAL_NP_CHAIN"
}

start_containerd() {
  mkdir -p "$CTR_RUN" "$CTR_ROOT"
  start containerd containerd --config "$CL/containerd.toml"
  wait_for "containerd" containerd ctr --address "$CTR_SOCK" version
  local ref tar
  for ref in "$PAUSE_REF" "$COREDNS_REF" "$METRICS_SERVER_REF" "$LOCAL_PATH_REF" "$BUSYBOX_REF"; do
    case "$ref" in
      "$PAUSE_REF") tar="$PAUSE_DIR/pause.tar" ;;
      "$COREDNS_REF") tar="$COREDNS_DIR/coredns.tar" ;;
      "$METRICS_SERVER_REF") tar="$METRICS_SERVER_DIR/image.tar" ;;
      "$LOCAL_PATH_REF") tar="$LOCAL_PATH_DIR/image.tar" ;;
      *) tar="$BUSYBOX_DIR/image.tar" ;;
    esac
    if ! ctr_ images ls -q | grep -qxF "$ref"; then
      ctr_ images import "$tar" >/dev/null
      say "imported $ref"
    fi
    # Pinned: the kubelet's image GC (run on disk pressure) never removes these. They were
    # built offline and cannot be pulled again; without the pause image no pod can start.
    ctr_ images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
  done
}

start_control_plane() {
  local ip="$1"
  mkdir -p "$STATE/etcd" && chmod 700 "$STATE/etcd"
  start etcd etcd --logger=zap --name ml-endpoints --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster ml-endpoints=http://127.0.0.1:2380 --log-level warn
  wait_for "etcd" etcd curl -fsS http://127.0.0.1:2379/health
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --secure-port=6443 \
    --advertise-address="$ip" --allow-privileged=true --authorization-mode=Node,RBAC \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" --enable-aggregator-routing=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range="$NODE_PORT_RANGE" \
    --profiling=false --v=1
  wait_for "kube-apiserver /readyz" kube-apiserver kc get --raw /readyz
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$CL/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --cluster-cidr="$CLUSTER_CIDR" --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$CL/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --v=1
}

start_node() {
  local ip="$1"
  mkdir -p "$STATE/kubelet"
  start kubelet "$K8S_BIN/kubelet" --config="$CL/kubelet.yaml" \
    --kubeconfig="$CL/kubelet.kubeconfig" --root-dir="$STATE/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$ip" --v=1
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$CL/kube-proxy.yaml"
  wait_for "kube-proxy rules synced" kube-proxy curl -fsS http://127.0.0.1:10256/healthz
  wait_for "node $NODE_NAME Ready" kubelet \
    kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
}

coredns_manifest() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        prometheus :9153
        forward . /etc/resolv.conf
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_REF
        imagePullPolicy: Never      # imported into containerd by cluster.sh, never pulled
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: metrics, containerPort: 9153, protocol: TCP}
        resources:
          limits: {memory: 170Mi}
          requests: {cpu: 50m, memory: 70Mi}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
          readOnlyRootFilesystem: true
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
      - name: config
        configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: metrics, port: 9153, protocol: TCP}
EOF
}

# metrics-server v0.9.0's manifests/base, with the image built here and the flags this node
# needs: the kubelet's serving cert is self-signed (--kubelet-insecure-tls) and the node's
# hostname does not resolve (InternalIP only). The API server reaches it through the
# aggregation layer (front-proxy flags, --enable-aggregator-routing: straight to the pod IP).
metrics_server_manifest() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: metrics-server, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: "system:aggregated-metrics-reader"
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:metrics-server"}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: metrics-server-auth-reader, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "metrics-server:system:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:metrics-server"}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system, labels: {k8s-app: metrics-server}}
spec:
  selector: {k8s-app: metrics-server}
  ports: [{name: https, port: 443, protocol: TCP, targetPort: https, appProtocol: https}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: metrics-server, namespace: kube-system, labels: {k8s-app: metrics-server}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: metrics-server}}
  strategy: {rollingUpdate: {maxUnavailable: 0}}
  template:
    metadata: {labels: {k8s-app: metrics-server}}
    spec:
      serviceAccountName: metrics-server
      priorityClassName: system-cluster-critical
      containers:
      - name: metrics-server
        image: $METRICS_SERVER_REF
        imagePullPolicy: Never      # imported into containerd by cluster.sh, never pulled
        args:
        - --cert-dir=/tmp
        - --secure-port=10250
        - --kubelet-preferred-address-types=InternalIP
        - --kubelet-use-node-status-port
        - --kubelet-insecure-tls
        - --metric-resolution=15s
        ports: [{name: https, containerPort: 10250, protocol: TCP}]
        resources:
          requests: {cpu: 50m, memory: 100Mi}
        readinessProbe:
          httpGet: {path: /readyz, port: https, scheme: HTTPS}
          periodSeconds: 5
          failureThreshold: 3
        livenessProbe:
          httpGet: {path: /livez, port: https, scheme: HTTPS}
          periodSeconds: 10
          failureThreshold: 3
        securityContext:
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          runAsUser: 65534
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: tmp-dir, mountPath: /tmp}]
      volumes: [{name: tmp-dir, emptyDir: {}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: metrics-server, namespace: kube-system}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}

# local-path-provisioner v0.0.30's deploy/local-path-storage.yaml with the images built here,
# volumes under $STATE/local-path, and `local-path` as the default StorageClass.
local_path_manifest() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner-role, namespace: local-path-storage}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-path-provisioner-role}
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner-bind, namespace: local-path-storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner-role}
subjects: [{kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-path-provisioner-bind}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner-role}
subjects: [{kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: local-path-provisioner, namespace: local-path-storage}
spec:
  replicas: 1
  selector: {matchLabels: {app: local-path-provisioner}}
  template:
    metadata: {labels: {app: local-path-provisioner}}
    spec:
      serviceAccountName: local-path-provisioner-service-account
      containers:
      - name: local-path-provisioner
        image: $LOCAL_PATH_REF
        imagePullPolicy: Never      # imported into containerd by cluster.sh, never pulled
        command: [/local-path-provisioner, --debug, start, --config, /etc/config/config.json]
        volumeMounts: [{name: config-volume, mountPath: /etc/config/}]
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: CONFIG_MOUNT_PATH, value: /etc/config/}
      volumes:
      - name: config-volume
        configMap: {name: local-path-config}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$STATE/local-path"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
      - {key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}
      containers:
      - name: helper-pod
        image: $BUSYBOX_REF
        imagePullPolicy: Never
EOF
}

# ---------------------------------------------------------------------------- S3 (versitygw)
# versitygw's POSIX gateway as a host process (like etcd): an S3 API on 127.0.0.1 for the host
# and on the node IP for pods, buckets are folders under $STATE/s3. Its root keys are made
# once per cluster and kept 0600 in $S3_ENV, which is also what clients read (boto3 honours
# AWS_ENDPOINT_URL); they reach versitygw through its environment, never its command line.
s3_env_file() {
  local ip="$1" key secret
  if [ -f "$S3_ENV" ]; then
    key=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$S3_ENV")
    secret=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$S3_ENV")
  else
    key="mle$(openssl rand -hex 8)"; secret=$(openssl rand -base64 30 | tr '+/' '-_')
  fi
  ( umask 077; put "$S3_ENV" <<EOF
# The local cluster's S3 server (versitygw, scripts/cluster.sh). Secret: keep 0600.
AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
ML_ENDPOINTS_S3_POD_ENDPOINT=http://$ip:$S3_PORT
ML_ENDPOINTS_S3_BUCKET=$S3_BUCKET
AWS_REGION=$S3_REGION
AWS_ACCESS_KEY_ID=$key
AWS_SECRET_ACCESS_KEY=$secret
EOF
  )
  chmod 600 "$S3_ENV"
}

# s3_curl CURL-ARGS... PATH: the HTTP status of a SigV4-signed request (curl's own signer;
# the credentials go in on stdin, not on the command line). S3 wants x-amz-content-sha256,
# which curl 7.88 does not add by itself.
s3_curl() {
  local path="${*: -1}"
  # shellcheck disable=SC1090
  ( . "$S3_ENV"
    printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" \
      | curl -sS -o /dev/null -w '%{http_code}' -K - --aws-sigv4 "aws:amz:$S3_REGION:s3" \
          -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "${@:1:$#-1}" "http://127.0.0.1:$S3_PORT$path" )
}

start_s3() {
  local ip="$1" code
  s3_env_file "$ip"
  mkdir -p "$STATE/s3" && chmod 700 "$STATE/s3"
  # shellcheck disable=SC1090
  ( . "$S3_ENV"
    export ROOT_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" ROOT_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
    export VGW_REGION="$AWS_REGION"
    start versitygw "$VERSITYGW_DIR/versitygw" --port "127.0.0.1:$S3_PORT" --port "$ip:$S3_PORT" \
      posix "$STATE/s3" )
  wait_for "versitygw" versitygw curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"
  code=$(s3_curl --head "/$S3_BUCKET")
  if [ "$code" != 200 ]; then
    code=$(s3_curl -X PUT "/$S3_BUCKET")
    [ "$code" = 200 ] || die "versitygw answered $code to creating bucket $S3_BUCKET (log: $LOGS/versitygw.log)"
    say "S3 bucket $S3_BUCKET created"
  fi
}

smoke_pod() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: cluster-up-check, namespace: default}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: pause, image: $PAUSE_REF, imagePullPolicy: Never}]
EOF
}

up_native() {
  [ "$(id -u)" = 0 ] || die "the native cluster runs containerd, kubelet and iptables: run as root"
  local t0 ip; t0=$(date +%s)
  ensure_packages
  ensure_built
  ip=$(node_ip)
  mkdir -p "$CL" "$LOGS" "$RUN" "$STATE"
  host_prep
  # Keep the PKI of a cluster that is (partly) up; make a new one for a fresh start or a
  # changed node IP. Components already running are left alone, dead ones restarted.
  if pki_ok "$ip"; then say "PKI: reusing $PKI"; front_proxy_pki; else step "make PKI" make_pki "$ip"; fi
  write_configs "$ip"
  start_containerd
  start_control_plane "$ip"
  start_node "$ip"
  { coredns_manifest; echo ---; metrics_server_manifest; echo ---; local_path_manifest; } \
    | kc apply -f - >/dev/null
  start_s3 "$ip"
  wait_for "default ServiceAccount" kube-controller-manager kc -n default get serviceaccount default
  kc delete pod cluster-up-check --ignore-not-found --wait=true >/dev/null
  smoke_pod | kc apply -f - >/dev/null
  wait_for "test pod Ready" kubelet kc wait --for=condition=Ready pod/cluster-up-check --timeout=2s
  kc delete pod cluster-up-check --wait=false >/dev/null
  wait_for "CoreDNS Ready" kubelet \
    kc -n kube-system wait --for=condition=Available deploy/coredns --timeout=2s
  wait_for "local-path-provisioner Ready" kubelet \
    kc -n local-path-storage wait --for=condition=Available deploy/local-path-provisioner --timeout=2s
  # Available once metrics-server has scraped the kubelet (its /readyz waits for that).
  wait_for "metrics API (metrics-server) Available" kubelet \
    kc wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=2s
  say "cluster up in $(( $(date +%s) - t0 ))s; KUBECONFIG=$KUBECONFIG_OUT"
  echo "$KUBECONFIG_OUT"
}

# ---------------------------------------------------------------------------- down
stop_component() {
  local name="$1" f pid; f=$(pidfile "$name")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid" 2>/dev/null || true; }
    say "$name: stopped"
  fi
  rm -f "$f"
}

# remove_pods: stop every container of our containerd (tasks, then containers) and release
# the CNI network namespaces the CRI made. containerd runs until this is done.
remove_pods() {
  running containerd || return 0
  local id
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 1
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
}

# drop_chains IPTABLES TABLE PREFIX...: flush and delete every chain named PREFIX* in TABLE,
# after removing the rules elsewhere that jump to them.
drop_chains() {
  local ipt="$1" table="$2"; shift 2
  local pat; pat="^($(IFS='|'; echo "$*"))"
  local chains; chains=$("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E "$pat" || true)
  [ -n "$chains" ] || return 0
  local rule
  { "$ipt" -t "$table" -S | grep -E -- "-j ($(echo "$chains" | paste -sd'|'))( |$)" \
      | grep -E '^-A' || true; } | while read -r rule; do
      # iptables -S quotes comments shell-style: eval to split the rule back into words.
      eval "\"\$ipt\" -t \"\$table\" ${rule/-A/-D}" 2>/dev/null || true
    done
  local c; for c in $chains; do "$ipt" -t "$table" -F "$c" 2>/dev/null || true; done
  for c in $chains; do "$ipt" -t "$table" -X "$c" 2>/dev/null || true; done
}

clean_network() {
  local ipt t
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle; do drop_chains "$ipt" "$t" KUBE- CNI- ML-ENDPOINTS-; done
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  local ns; for ns in /run/netns/cni-*; do
    [ -e "$ns" ] || continue
    umount "$ns" 2>/dev/null || true; rm -f "$ns"
  done
  # kube-proxy turned this on for NodePorts on 127.0.0.1; nothing else here needs it.
  sysctl -qw net.ipv4.conf.all.route_localnet=0 || true
}

# unmount_under DIR: unmount everything mounted below DIR, deepest first.
unmount_under() {
  local m; awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

down_native() {
  [ "$(id -u)" = 0 ] || die "run as root"
  local c
  for c in versitygw kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$c"
  done
  remove_pods
  stop_component containerd
  unmount_under "$STATE"; unmount_under "$CTR_RUN"
  clean_network
  rm -rf "$STATE" "$CTR_RUN" "$RUN" "$PKI" "$CL"/*.kubeconfig "$KUBECONFIG_OUT" "$S3_ENV" \
    /var/log/pods /var/log/containers   # the kubelet's fixed log dirs: only ours use them
  say "cluster down (built binaries and imported images kept under $TOOLS and $CTR_ROOT)"
}

status_native() {
  local c any=0
  for c in "${COMPONENTS[@]}"; do
    if running "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(cat "$(pidfile "$c")")"; any=1
    else printf '%-24s stopped\n' "$c"; fi
  done
  [ "$any" = 1 ] || { echo "cluster: down"; return 3; }
  if [ -f "$KUBECONFIG_OUT" ] && kc get --raw /readyz >/dev/null 2>&1; then
    echo "kubeconfig: $KUBECONFIG_OUT"
    kc get nodes -o wide
    kc get pods -A -o wide
  else
    echo "cluster: API server not answering"; return 1
  fi
}

# ---------------------------------------------------------------------------- kind (laptops)
# kind's documented local-registry set-up (kind.sigs.k8s.io/docs/user/local-registry/),
# with the registry published on 127.0.0.1:5000 like the native cluster's.
KIND_NAME=ml-endpoints
up_kind() {
  if [ "$(docker inspect -f '{{.State.Running}}' kind-registry 2>/dev/null)" != true ]; then
    docker run -d --restart=always -p "127.0.0.1:5000:5000" --network bridge \
      --name kind-registry "$KIND_REGISTRY_IMAGE" >/dev/null
  fi
  if ! kind get clusters 2>/dev/null | grep -qx "$KIND_NAME"; then
    kind create cluster --name "$KIND_NAME" --wait 180s --config - <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
nodes:
- role: control-plane
  extraPortMappings:
  - {containerPort: 30080, hostPort: 30080, listenAddress: "127.0.0.1"}
EOF
  fi
  local n; for n in $(kind get nodes --name "$KIND_NAME"); do
    docker exec "$n" mkdir -p "/etc/containerd/certs.d/$REGISTRY"
    printf '[host."http://kind-registry:5000"]\n' | docker exec -i "$n" cp /dev/stdin \
      "/etc/containerd/certs.d/$REGISTRY/hosts.toml"
  done
  docker network connect kind kind-registry 2>/dev/null || true
  mkdir -p "$CL"
  kind get kubeconfig --name "$KIND_NAME" >"$KUBECONFIG_OUT"
  KUBECONFIG="$KUBECONFIG_OUT" kubectl wait --for=condition=Ready nodes --all --timeout=180s
  echo "$KUBECONFIG_OUT"
}

mode() {
  case "${ML_ENDPOINTS_CLUSTER:-auto}" in
    kind|native) echo "${ML_ENDPOINTS_CLUSTER}" ;;
    auto) if command -v kind >/dev/null && docker info >/dev/null 2>&1 \
             && ! running containerd; then echo kind; else echo native; fi ;;
    *) die "ML_ENDPOINTS_CLUSTER must be kind, native or auto, got ${ML_ENDPOINTS_CLUSTER}" ;;
  esac
}

case "${1:-}" in
  up) if [ "$(mode)" = kind ]; then up_kind; else up_native; fi ;;
  down) if [ "$(mode)" = kind ]; then kind delete cluster --name "$KIND_NAME"; else down_native; fi ;;
  status) if [ "$(mode)" = kind ]; then kubectl --kubeconfig "$KUBECONFIG_OUT" get nodes,pods -A
          else status_native; fi ;;
  build) ensure_packages; ensure_built ;;
  *) die "usage: $0 up|down|status|build" ;;
esac
