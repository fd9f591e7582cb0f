# Two commands for a fresh machine:  `make demo`  (set up + run the demo pipeline)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlhfkit-installed

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install_torch.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	bash scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -e ".[dev,label]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/rlhfkit demo --out runs/demo

test: setup
	$(VENV)/bin/python -m pytest -q -ra

# The tests without end-to-end training or torchrun (a few minutes on 2 cores); `make test` runs them all, as CI does.
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow and not distributed"

lint: setup
	$(VENV)/bin/ruff check rlhfkit recipes tests bench scripts

clean:
	rm -rf runs .pytest_cache
