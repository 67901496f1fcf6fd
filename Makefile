# GROK: `make demo` and `make test` set up everything they need on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.grok-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

# The torch/torchvision pair is pinned in the same pip command as everything else (see README: Installation).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install java test lint format data-synth validate data train-align train-mllm infer eval demo demo-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install $(TORCH_PINS) -e ".[dev,sweep]"
	touch $(STAMP)

install: $(STAMP) java

# METEOR (pycocoevalcap) runs a Java program; install a JRE where it is missing and we may.
java:
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null; \
	  else echo "warning: no Java found; METEOR will be reported as unavailable" >&2; fi; }

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests experiments
	$(BIN)/ruff format --check src tests experiments

format: install
	$(BIN)/ruff check --fix src tests experiments
	$(BIN)/ruff format src tests experiments

# ---- the pipeline (each step is a Hydra app: append ARGS="key=value ..." to override) -----------------------
data-synth: install
	$(BIN)/grok-synth $(ARGS)

validate: install
	$(BIN)/grok-validate $(ARGS)

data: install
	$(BIN)/grok-generate $(ARGS)

train-align: install
	$(BIN)/grok-train-align $(ARGS)

train-mllm: install
	$(BIN)/grok-train-mllm $(ARGS)

infer: install
	$(BIN)/grok-infer $(ARGS)

eval: install
	$(BIN)/grok-eval $(ARGS)

demo: install
	$(BIN)/python -m grok.demo $(ARGS)

# What the README promises `make demo` writes (same ARGS as the demo, e.g. ARGS="paths.root_dir=/tmp/grok-demo").
demo-check: install
	$(BIN)/python tests/demo_outputs.py $(ARGS)

clean:
	rm -rf logs outputs data/syntheye data/instructions artifacts .pytest_cache

# ---- serving (grok-serve) and the browser its page tests use ----------------------------------------------------
# Headless Chromium + chromedriver (Debian packages; Playwright/Selenium browser downloads cannot work offline) and
# curl, installed as root where missing; `make test` depends on it through the extra prerequisite line below.
.PHONY: web-test-tools serve
test: web-test-tools

web-test-tools:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && command -v curl >/dev/null 2>&1; \
	then :; elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver curl >/dev/null; \
	else echo "warning: no chromium/chromedriver; the page tests will be skipped" >&2; fi

serve: install
	$(BIN)/grok-serve $(ARGS)
