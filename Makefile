# Two commands a user needs; both create/reuse .venv and are safe to run again.
.PHONY: demo test setup lint lock

PY := .venv/bin/python
# pytest-xdist workers: the suite is mostly launches of 1-2 processes that wait on imports; 2 workers halve its
# time on 2 cores (tests/conftest.py keeps each module, and the shared distributed jobs, in one worker)
TEST_WORKERS ?= 2
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

setup:
	@bash scripts/setup_venv.sh

demo: setup
	$(PY) launch.py recipes/blip_progressive.py --demo training.resume=overwrite
	@echo "demo results: outputs/blip_progressive_demo (training_summary.json, metrics.jsonl, plots/, best/)"

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n $(TEST_WORKERS)

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

lock:
	@bash scripts/lock_stack.sh
