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

.PHONY: all venv kube-bins cluster-up cluster-down kubeconfig crds lint test run bench faults soak clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Rebuilds only when the pins in tests/localkube change (build.sh checks).
kube-bins:
	@tests/localkube/build.sh $(KUBE_BIN)

cluster-up: venv kube-bins
	$(PY) -m localkube up

cluster-down: venv
	$(PY) -m localkube down

kubeconfig: venv
	@$(PY) -m localkube kubeconfig

crds: venv
	$(PY) -m sluice crds --output crds/
	$(PY) -m sluice crds --output deploy/crd/

lint: venv
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy

test: venv kube-bins lint
	$(PY) -m pytest

# The operator, and the REST API on http://127.0.0.1:8080; Ctrl-C stops both.
run: venv kube-bins
	@if [ -z "$$KUBECONFIG" ]; then $(PY) -m localkube up; export KUBECONFIG="$$($(PY) -m localkube kubeconfig)"; fi; \
	$(KUBE_BIN)/kubectl apply --server-side --force-conflicts -f crds/ && \
	$(KUBE_BIN)/kubectl wait --for=condition=Established crd/pipelines.sluice.dev --timeout=60s && \
	{ $(PY) -m sluice api --bind $(API_BIND) & api=$$!; \
	  trap 'kill $$api 2>/dev/null; wait $$api 2>/dev/null' EXIT INT TERM; \
	  $(PY) -m sluice run $(OPERATOR_FLAGS); }

# The REST API bench's load generator; built once (it falls back to Python without Go).
$(KUBE_BIN)/hey:
	@if command -v go >/dev/null; then GOBIN=$(CURDIR)/$(KUBE_BIN) go install github.com/rakyll/hey@v0.1.5; \
	else echo "no Go toolchain: bench_rest_api.py uses its Python load generator"; fi

bench: venv kube-bins $(KUBE_BIN)/hey
	$(PY) -m pytest tests/bench/bench_clear.py -s -q
	$(PY) -m pytest tests/bench/bench_rest_api.py -s -q
	$(PY) -m pytest tests/bench/bench_scale.py -s -q
	$(PY) -m pytest tests/bench/bench_failover.py -s -q

# Every control-plane fault case (CI runs only the API server restart), on a cluster of their
# own; prints one line per case. About 6 minutes.
faults: venv kube-bins
	$(PY) -m pytest tests/faults -m "faults or not faults" -s -q

# Churn over 200 pipelines with two elected operators and forced failovers; SOAK_MINUTES long
# (not in CI). Prints RSS, asyncio tasks and clears requested/completed over time.
SOAK_MINUTES ?= 30
soak: venv kube-bins
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) -m pytest tests/soak -m soak -s -q

clean: cluster-down
	rm -rf .cache $(VENV)
