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

TOOLS="$ML_ENDPOINTS_CACHE/tools"
K8S_DIR="$TOOLS/kubernetes-$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
COREDNS_DIR="$TOOLS/coredns-$COREDNS_VERSION"
PAUSE_DIR="$TOOLS/pause-$PAUSE_VERSION"
CL="$ML_ENDPOINTS_CACHE/cluster"          # kubeconfig, PKI, configs, logs: this cluster's
KUBECONFIG_OUT="$CL/kubeconfig"
PKI="$CL/pki"
LOGS="$CL/logs"
RUN=/run/ml-endpoints                     # pid files
STATE=/var/lib/ml-endpoints               # etcd data, kubelet root (wiped by `down`)
CTR_ROOT=/var/lib/ml-endpoints-containerd # images survive `down`: warm start
CTR_RUN=/run/ml-endpoints-containerd
CTR_SOCK="$CTR_RUN/containerd.sock"
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

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
  if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}"
  fi
}

ensure_built() {
  command -v go >/dev/null || die "go is not on PATH (the components are built from Go modules)"
  if stamp_ok "$K8S_DIR/.complete" "$K8S_VERSION"; then say "kubernetes $K8S_VERSION: cached"
  else step "build kubernetes $K8S_VERSION" build_k8s; fi
  if stamp_ok "$COREDNS_DIR/.complete" "$(coredns_key)"; then say "coredns $COREDNS_VERSION: cached"
  else step "build coredns $COREDNS_VERSION" build_coredns; fi
  if stamp_ok "$PAUSE_DIR/.complete" "$(pause_key)"; then say "pause image: cached"
  else step "build pause image" build_pause; fi
}

# ---------------------------------------------------------------------------- helpers
pidfile() { echo "$RUN/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# start NAME CMD...: run CMD detached (own session, survives make) with its log and pid file.
start() {
  local name="$1"; shift
  if running "$name"; then say "$name: already running (pid $(cat "$(pidfile "$name")"))"; return; fi
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

# cert NAME CN [O] [SAN]: key + certificate signed by the cluster CA.
cert() {
  local name="$1" cn="$2" org="${3:-}" san="${4:-}" subj="/CN=$2"
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  newkey "$PKI/$name.key"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature"
    if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi; } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
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
  for ref in "$PAUSE_REF" "$COREDNS_REF"; do
    if ctr_ images ls -q | grep -qxF "$ref"; then continue; fi
    [ "$ref" = "$PAUSE_REF" ] && tar="$PAUSE_DIR/pause.tar" || tar="$COREDNS_DIR/coredns.tar"
    ctr_ images import "$tar" >/dev/null
    say "imported $ref"
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
  if pki_ok "$ip"; then say "PKI: reusing $PKI"; else step "make PKI" make_pki "$ip"; fi
  write_configs "$ip"
  start_containerd
  start_control_plane "$ip"
  start_node "$ip"
  coredns_manifest | kc apply -f - >/dev/null
  wait_for "default ServiceAccount" kube-controller-manager kc -n default get serviceaccount default
  kc delete pod cluster-up-check --ignore-not-found --wait=true >/dev/null
  smoke_pod | kc apply -f - >/dev/null
  wait_for "test pod Ready" kubelet kc wait --for=condition=Ready pod/cluster-up-check --timeout=2s
  kc delete pod cluster-up-check --wait=false >/dev/null
  wait_for "CoreDNS Ready" kubelet \
    kc -n kube-system wait --for=condition=Available deploy/coredns --timeout=2s
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
  for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_component "$c"
  done
  remove_pods
  stop_component containerd
  unmount_under "$STATE"; unmount_under "$CTR_RUN"
  clean_network
  rm -rf "$STATE" "$CTR_RUN" "$RUN" "$PKI" "$CL"/*.kubeconfig "$KUBECONFIG_OUT" \
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
