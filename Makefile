# bvvlab: two commands do all the set-up (README). Both create or refresh the project-local
# virtual environment `.venv` first; a re-run with nothing changed costs a few seconds.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo
# papermill/nbval run notebooks on the venv's own kernel "python3" (docs/stack.md section 3.1)
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: demo test test-fast setup clean-venv strip

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

## main job: every notebook in order (papermill) on the embedded data, then runs/demo/report.html;
## a re-run skips the finished steps
demo: $(STAMP)
	$(BIN)/python -m bvvlab pipeline --profile demo --out $(OUT)

## the whole test suite: unit tests, then every notebook under nbval (errors fail)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 900 tests
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --timeout 900 -p no:randomly notebooks

## the unit tier only (no test marked slow, no notebooks): 436 tests in 1 min 25 s on a quiet
## 2-core machine (docs/measured.md)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 900 -m "not slow" tests

strip:
	$(BIN)/python scripts/strip_notebooks.py notebooks/*.ipynb

clean-venv:
	rm -rf $(VENV)
