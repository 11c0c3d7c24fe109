# Two commands matter: `make run` (set up + run the whole pipeline offline) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := run
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
SCHEMA_DIR ?= ../shared/schemas
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1
# Some machines set PYTHONDONTWRITEBYTECODE; the venv is byte-compiled at install so every stage process
# (mlflow, evidently and great_expectations take seconds to import from source) starts fast anyway.
unexport PYTHONDONTWRITEBYTECODE

HEADLINE := Experiment|Created|^sharpe$$|^dsr$$|max_drawdown|win_rate|n_trades|^ic$$|chosen|verdict|drifted_instruments

.PHONY: exp run test install lint fmt bench schemas schemas-available lock clean promote-staging mlflow-ui e2e e2e-tools images images-built

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-bootstrap.lock

# Install exactly what requirements.lock pins (what CI tested), every file checked against its hash
# (--require-hashes: a package without one, or a file that differs, fails), then the project without deps.
$(STAMP): $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/uv pip sync --python $(BIN)/python --quiet --compile-bytecode --require-hashes requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## run: the main job — the whole DVC pipeline on the embedded simulated market, offline.
run: install
	@test -d .dvc || $(BIN)/dvc init --quiet
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/autotrader reports

## exp: experiments side by side with the headline columns only (fits a terminal; `dvc exp show` alone
## lists every param, dependency hash and metric).
exp: install
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc exp show --no-pager --drop '.*' --keep '$(HEADLINE)'

## test: the whole suite (real MLflow, S3 on loopback, Prometheus, kustomize).
## (e2e-tools first: the cluster scenarios are part of the suite; without Go they are skipped with the reason.
## images-built too, before pytest: minutes of buildah must not run beside the latency-judged canaries.)
test: install schemas-available e2e-tools images-built
	AUTOTRADER_E2E_REPORT_DIR="$(CURDIR)/build/e2e" PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=15

## e2e: only the cluster scenarios (real kube-apiserver, controller-manager, scheduler, etcd, kwok and the
## Argo Rollouts controller, built from e2e/'s Go modules), with their measurements in build/e2e/.
e2e: install schemas-available e2e-tools
	AUTOTRADER_E2E_REPORT_DIR="$(CURDIR)/build/e2e" PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/python -m pytest -n 2 --dist loadgroup -q tests/e2e tests/test_e2e_overlay.py

## e2e-tools: build the harness's upstream programs (cached outside the repo, keyed by e2e/'s go.sum files).
## Without Go this says why and goes on (the tests then skip, or fail under CI=true).
e2e-tools:
	@bash scripts/build_e2e_tools.sh >/dev/null || { code=$$?; [ $$code -eq 3 ] || exit $$code; }

## schemas-available: the upstream schemas the manifest tests need: ../shared/schemas, or .schemas/ (fetched
## once, when neither is there). Without network this prints one line saying what to do.
schemas-available:
	@if [ ! -f "$(SCHEMA_DIR)/argo-rollouts/rollout-crd.yaml" ] && [ ! -f .schemas/argo-rollouts/rollout-crd.yaml ] \
		&& [ -z "$$AUTOTRADER_SCHEMA_DIR" ]; then \
		bash scripts/fetch_schemas.sh .schemas >/dev/null 2>&1 || { rm -rf .schemas; \
		echo "no upstream schemas: put them in ../shared/schemas or run 'make schemas SCHEMA_DIR=.schemas' with network; the manifest tests will fail until then"; }; \
	fi

## images: the base (debootstrap, Python 3.11), serving and pipeline images, built here with buildah (no registry);
## cached by a content hash of what each is built from. Needs root, buildah and debootstrap (docs/delivery.md).
images: e2e-tools
	bash scripts/build_images.sh

## images-built: the images the image tests run, built before the suite; where buildah, debootstrap or root is
## missing this says nothing and goes on (tests/test_images.py then skips, or fails under CI=true).
images-built: e2e-tools
	@if bash scripts/build_images.sh --check >/dev/null 2>&1; then bash scripts/build_images.sh >/dev/null; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: the speed and memory figures reported in the README.
bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/data_pipeline.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/training.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/serving.py
	PATH="$(CURDIR)/$(BIN):$$PATH" nice -n 10 $(BIN)/python bench/health_power.py

## schemas: fetch the upstream Argo schemas (same files and commits as ../shared/schemas/SOURCES.md).
schemas:
	bash scripts/fetch_schemas.sh $(SCHEMA_DIR)

## lock: recompile the hash-locked requirements from pyproject.toml (needs the network to PyPI). uv keeps
## the versions already in requirements.lock; the serving image's and pip-audit's locks take them from it;
## requirements-bootstrap.lock pins the uv that installs everything (UV_VERSION, the `bootstrap` group).
lock: $(BIN)/python
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
	$(BIN)/uv pip compile --group serving --python-version 3.11 --generate-hashes -c requirements.lock -o requirements-serving.lock
	$(BIN)/uv pip compile --group audit --python-version 3.11 --generate-hashes -c requirements.lock -o requirements-audit.lock
	$(BIN)/uv pip compile --group bootstrap --python-version 3.11 --generate-hashes -o requirements-bootstrap.lock

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
