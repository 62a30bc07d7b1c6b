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

# Most tests wait on real-time audio over loopback, not on the CPU: independent files run side by side
# (whole files per worker keep module fixtures shared), then the timing-sensitive ones (marked serial)
# alone on a quiet machine. Both passes always run; the target fails if either fails.
TEST_WORKERS ?= 3
test: $(STAMP)  ## the whole test suite (plain `pytest -q` runs it serially)
	@rc=0; \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not serial" || rc=$$?; \
	$(BIN)/python -m pytest -q -m serial || rc=$$?; \
	exit $$rc

bench: $(STAMP)  ## benchmarks: writes bench/results/<date>.json and bench/RESULTS.md
	$(BIN)/python -m bench

bench-smoke: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info
