# Sluice: every target does its own set-up, so each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KUBE_BIN := .cache/localkube/bin
export PATH := $(CURDIR)/$(KUBE_BIN):$(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)/tests
# What `make run` starts: the REST API's address, and the operator's flags (`sluice run -h`).
API_BIND ?= 127.0.0.1:8080
OPERATOR_FLAGS ?= --all-namespaces

.PHONY: all venv kube-bins node-runtime pipeline argocd feldera-schema promtool helm cluster-up cluster-down kubeconfig crds lint docs test run bench faults soak clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Rebuilds only when the pins in tests/localkube change (build.sh checks); likewise the CSI
# stack (tests/csi/build.sh), helm and the kstatus judge (tests/tools/build.sh), the real
# node's CNI plugins (tests/cni/build.sh) and its images (tests/images/build.sh: pause, the
# tests' probe, and the engine pipeline's once tests/pipeline/build.sh exists).
kube-bins:
	@tests/localkube/build.sh $(KUBE_BIN)
	@tests/csi/build.sh $(KUBE_BIN)
	@tests/tools/build.sh $(KUBE_BIN)
	@tests/cni/build.sh $(KUBE_BIN)
	@tests/images/build.sh $(KUBE_BIN)

# The real node's container runtime, from Debian: containerd 1.6.20 and runc 1.1.5, which
# kubelet 1.36 supports. Chosen over containerd v2 + runc from the Go module proxy (which
# work the same) because they install in seconds, where those build in ~2.5 min and need
# libseccomp-dev. containerd 1.x support ends with Kubernetes 1.38: switch to v2 before the
# pin in tests/localkube/go.mod gets there. Nothing starts them as a service (no systemd):
# the launcher runs containerd with a config of its own. xfsprogs: csi-local's volumes are XFS
# filesystems on loop devices, grown online (tests/csi/driver/volume.go says why not ext4).
# Quick when already installed.
node-runtime:
	@command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null \
	  && command -v containerd-shim-runc-v2 >/dev/null && command -v mkfs.xfs >/dev/null \
	  && command -v xfs_growfs >/dev/null || { \
	  echo "installing containerd, runc and xfsprogs (Debian packages)" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends containerd runc xfsprogs >/dev/null; }

# Argo CD for the GitOps tests (tests/argocd): its multi-call binary at the version pinned by
# tests/tools/argocd/go.mod (rebuilt only when the pins change; cold ~10 min), and Debian's
# redis-server, which Argo CD needs as its cache, installed when missing.
argocd:
	@tests/tools/build-argocd.sh $(KUBE_BIN)
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian) for Argo CD" >&2; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q --no-install-recommends redis-server >/dev/null || \
	  { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q >/dev/null && \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q --no-install-recommends redis-server >/dev/null; }; }

# Prometheus's promtool and server from Debian (prometheus 2.42), for the tests of the chart's
# alerts (tests/alerts: promtool check/test rules; tests/integration/test_alerts.py runs a real
# server on 127.0.0.1). Nothing starts it as a service. Quick when already installed.
promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing prometheus (Debian) for the alert tests" >&2; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The engine pipeline (tests/pipeline: a program on Feldera's engine that real pods run), built
# with Rust's output in a per-user cache shared by every checkout; rebuilt only when its pins
# or sources change. Also writes engine-pipeline.libs, the shared libraries it needs.
export SLUICE_ENGINE_PIPELINE := $(CURDIR)/$(KUBE_BIN)/engine-pipeline
pipeline:
	@tests/pipeline/build.sh $(KUBE_BIN)

# Feldera's OpenAPI document (the schema of every REST API response), from the crates.io crate
# feldera-rest-api at the version pinned in tests/feldera_schema/Cargo.toml, fetched with
# cargo into .cache/feldera; refetched only when the pin changes.
FELDERA_SCHEMA := .cache/feldera
export SLUICE_FELDERA_OPENAPI := $(CURDIR)/$(FELDERA_SCHEMA)/openapi.json
feldera-schema:
	@tests/feldera_schema/fetch.sh $(FELDERA_SCHEMA)

# Prints the path of helm (built from the Go module proxy at a pinned version).
helm:
	@tests/tools/build.sh $(KUBE_BIN)
	@echo $(CURDIR)/$(KUBE_BIN)/helm

cluster-up: venv kube-bins node-runtime
	$(PY) -m localkube up

cluster-down: venv
	$(PY) -m localkube down

kubeconfig: venv
	@$(PY) -m localkube kubeconfig

crds: venv
	$(PY) -m sluice crds --output crds/
	$(PY) -m sluice crds --output deploy/crd/
	$(PY) -m sluice crds --output deploy/helm/sluice/crds/

lint: venv
	$(VENV)/bin/ruff check operator tests docs/hooks
	$(VENV)/bin/ruff format --check operator tests docs/hooks
	$(VENV)/bin/mypy

# The documentation site into site/ (mkdocs.yml; strict: a broken link or a warning fails).
# The Pipeline API reference is generated from crds/ as it builds. `make test` builds it too
# (tests/docs/test_docs_build.py). NO_MKDOCS_2_WARNING: Material's end-of-life banner.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The suite in TEST_WORKERS processes (pytest-xdist), each with a local cluster of its own and
# whole test files at a time (module fixtures are set up once): the tests mostly wait on
# their cluster, so two of them share two cores well. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: venv kube-bins node-runtime pipeline argocd feldera-schema promtool lint
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The operator, and the REST API on http://127.0.0.1:8080; Ctrl-C stops both.
# Quiet start: right after the CRD is installed the API server answers 429 "storage is
# (re)initializing" for a moment; the operator starts only once pipelines are served from
# the watch cache (resourceVersion=0 reads it, as the operator's watches do).
run: venv kube-bins node-runtime
	@if [ -z "$$KUBECONFIG" ]; then $(PY) -m localkube up || exit 1; export KUBECONFIG="$$($(PY) -m localkube kubeconfig)"; fi; \
	$(KUBE_BIN)/kubectl apply --server-side --force-conflicts -f crds/ && \
	$(KUBE_BIN)/kubectl wait --for=condition=Established crd/pipelines.sluice.dev --timeout=60s && \
	for i in $$(seq 300); do $(KUBE_BIN)/kubectl get --raw '/apis/sluice.dev/v1alpha1/pipelines?resourceVersion=0&limit=1' --request-timeout=5s >/dev/null 2>&1 && break; sleep 0.2; done && \
	{ $(PY) -m sluice api --bind $(API_BIND) & api=$$!; \
	  trap 'kill $$api 2>/dev/null; wait $$api 2>/dev/null' EXIT INT TERM; \
	  printf '\nIn another terminal:\n  export KUBECONFIG=%s\n  export PATH=%s:$$PATH\nREST API: http://%s (plain HTTP, for loopback only: deploy/ and the Helm chart serve HTTPS)\n\n' \
	    "$$KUBECONFIG" "$(CURDIR)/$(KUBE_BIN)" "$(API_BIND)"; \
	  $(PY) -m sluice run $(OPERATOR_FLAGS); }

# The REST API bench's load generator; built once (it falls back to Python without Go).
$(KUBE_BIN)/hey:
	@if command -v go >/dev/null; then GOBIN=$(CURDIR)/$(KUBE_BIN) go install github.com/rakyll/hey@v0.1.5; \
	else echo "no Go toolchain: bench_rest_api.py uses its Python load generator"; fi

bench: venv kube-bins node-runtime $(KUBE_BIN)/hey
	$(PY) -m pytest tests/bench/bench_clear.py -s -q
	$(PY) -m pytest tests/bench/bench_rest_api.py -s -q
	$(PY) -m pytest tests/bench/bench_scale.py -s -q
	$(PY) -m pytest tests/bench/bench_volumes.py -s -q
	$(PY) -m pytest tests/bench/bench_kopf_start.py -s -q
	$(PY) -m pytest tests/bench/bench_failover.py -s -q

# Every control-plane fault case (make test runs two: the API server restarted, and frozen),
# on a cluster of their own; prints one line per case. About 6 minutes.
faults: venv kube-bins node-runtime
	$(PY) -m pytest tests/faults -m "faults or not faults" -s -q

# Churn over 200 pipelines with two elected operators and forced failovers; SOAK_MINUTES long
# (not in CI). Prints RSS, asyncio tasks and clears requested/completed over time.
SOAK_MINUTES ?= 30
soak: venv kube-bins node-runtime
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m pytest tests/soak -m soak -s -q

clean: cluster-down
	rm -rf .cache $(VENV)
