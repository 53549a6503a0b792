# Continuous training: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-stamp
export CT_STATE_DIR ?= $(CURDIR)/.state

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	# ISLP ships the Bikeshare data set; its own requirements (lightning, pygam, ...) are not needed to read it
	$(VENV)/bin/python -m pip install --quiet --no-deps ISLP==0.6.0
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned stack (skipped when up to date)

demo: $(STAMP) ## Two real runs of the retrain DAG (bootstrap, then drift), then a summary
	./scripts/demo.sh

# make test's pytest processes (pytest-xdist), each given whole files (a module's fixtures start once); each starts
# its own clusters and PostgreSQL when its tests need them. TEST_WORKERS=0: one process, no xdist.
TEST_WORKERS ?= 2
test: $(STAMP) ## The whole test suite (unit, DAG, integration on real engines, end to end), TEST_WORKERS=2 processes
	./scripts/install-chromium.sh
	./scripts/install-nginx.sh
	$(VENV)/bin/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile

test-busy: $(STAMP) ## The whole suite beside one busy loop per core (scripts/test-under-load.sh)
	./scripts/test-under-load.sh

test-fast: $(STAMP) ## Unit and DAG tests only
	$(VENV)/bin/python -m pytest tests -m "not slow"

lint: $(STAMP) ## ruff (lint, format check) and mypy; the same checks as the pre-commit hooks
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

hooks: $(STAMP) ## Install the pre-commit hooks (ruff, mypy) into this clone's .git
	$(VENV)/bin/pre-commit install

# `make airflow PORT=N` (and mlflow, serve): only a PORT given on make's command line, not one in the environment.
ASKED_PORT := $(if $(filter command line,$(origin PORT)),$(PORT))

airflow: $(STAMP) ## Airflow UI and scheduler on http://127.0.0.1:8080, or PORT=N (login printed)
	$(if $(ASKED_PORT),AIRFLOW__API__PORT=$(ASKED_PORT) AIRFLOW__API__BASE_URL=http://127.0.0.1:$(ASKED_PORT) )./scripts/airflow.sh

mlflow: $(STAMP) ## MLflow UI on http://127.0.0.1:5000, or PORT=N, on the same store the pipelines write
	source scripts/env.sh && mkdir -p $$CT_STATE_DIR/mlflow && \
	  echo "MLflow UI: http://127.0.0.1:$(or $(ASKED_PORT),5000)" && \
	  mlflow ui --backend-store-uri "$${CT_MLFLOW_TRACKING_URI:-sqlite:///$$CT_STATE_DIR/mlflow/mlflow.db}" --host 127.0.0.1 --port $(or $(ASKED_PORT),5000)

serve: $(STAMP) ## Serving app on http://127.0.0.1:8000, or PORT=N (POST /v1/predict, GET /health, /ready, /docs)
	source scripts/env.sh && pipelines serve $(if $(ASKED_PORT),--port $(ASKED_PORT))

lock: ## Re-resolve requirements.txt and requirements-dev.txt into constraints.txt
	$(VENV)/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' | grep -v '^ISLP==' > constraints.txt

WHEELHOUSE := .wheelhouse
# the build backend of `pip install -e` inside the image (pyproject.toml asks for setuptools>=68)
SETUPTOOLS := 80.9.0
# what a Python 3.11 before 3.11.3 (Debian bookworm's 3.11.2) needs besides: redis asks for async-timeout there
FOR_OLDER_PYTHON := async-timeout==5.0.1
$(WHEELHOUSE)/.complete: requirements.txt constraints.txt pyproject.toml Makefile | $(STAMP)
	$(VENV)/bin/python -m pip wheel --quiet --find-links $(WHEELHOUSE) -w $(WHEELHOUSE) -r requirements.txt -c constraints.txt
	$(VENV)/bin/python -m pip wheel --quiet --find-links $(WHEELHOUSE) -w $(WHEELHOUSE) --no-deps ISLP==0.6.0 setuptools==$(SETUPTOOLS) $(FOR_OLDER_PYTHON)
	touch $@

wheelhouse: $(WHEELHOUSE)/.complete ## .wheelhouse/: every wheel the image installs, for an offline `docker build`

team-env: ## Write .env for docker-compose.yaml with random secrets (never overwrites one)
	./scripts/team-env.sh

test-deploy: $(STAMP) ## The team deployment in Podman containers (tests/deploy; part of `make test`)
	$(VENV)/bin/python -m pytest tests/deploy

clean: ## Remove the embedded state (.state: data, MLflow store, Airflow home)
	rm -rf $(CT_STATE_DIR)

.PHONY: help install demo test test-busy test-fast lint hooks airflow mlflow serve lock wheelhouse team-env test-deploy clean
