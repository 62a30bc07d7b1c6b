# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,tts]'
	touch $(STAMP)

demo: $(STAMP)  ## the smoke scenario against the embedded simulator; prints where report.html is
	$(BIN)/voiceload run scenarios/smoke.yaml

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## benchmarks: writes bench/results/<date>.json and bench/RESULTS.md
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info
