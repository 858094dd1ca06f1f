# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# torch goes in first and pinned, so that pip never pulls a multi-GB CUDA build; override it, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# Only for the file it carries: OpenAI's CLIP BPE vocabulary, for the tokenizer parity test.
	# Installed without its dependencies and never imported.
	$(BIN)/python -m pip install --quiet --no-deps "open_clip_torch==3.3.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/unclip demo --out demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo .pytest_cache
