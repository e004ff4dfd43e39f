# make install / test / demo / lint — each works on a fresh machine by itself.
# CPU machines get the CPU build of torch (torch==2.13.0 via constraints-cpu.txt); with a GPU (nvidia-smi present)
# the package's own range applies and pip picks a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
CONSTRAINTS := $(if $(HAS_GPU),,-c constraints-cpu.txt)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints-cpu.txt | sha256sum | cut -c1-12)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast test-families test-world-rlaif demo demo-grpo ablation lint clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(if $(HAS_GPU),,$(PIP) install -q torch==2.13.0)
	$(PIP) install -q $(CONSTRAINTS) -e ".[dev,deepspeed,qlora]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q tests -m "not world_rlaif"

# RLAIF's own effect over five world seeds, and its random-judge mutation (tests/test_world_rlaif.py): about 30
# minutes on 2 CPU cores, more than CI's budget leaves, so it has its own target.
test-world-rlaif: install
	$(PY) -m pytest -q -s tests -m world_rlaif

# The VLM family matrix alone (also part of `make test`).
test-families: install
	$(PY) -m pytest -q tests -m families

test-fast: install
	$(PY) -m pytest -q tests -m "not slow and not distributed and not chaos and not families and not world_rlaif"

demo: install
	$(VENV)/bin/srpo run recipes/tiny/demo.yaml

# The same demo with GRPO iterations (docs/grpo.md).
demo-grpo: install
	$(VENV)/bin/srpo run recipes/tiny/demo_grpo.yaml

# The world's five-seed ablation (docs/world.md, "Ablation"): about 45 minutes on 2 CPU cores.
ablation: install
	$(PY) benchmarks/world_ablation.py --seeds 0-4 --runs-dir runs/ablation --json runs/ablation/record.json

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
