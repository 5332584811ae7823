# Everything a fresh machine needs: `make demo` and `make test` create .venv when missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch lies on this disk; on a CUDA machine use e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ASYNC_LOGGING := false
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]' --config-settings editable_mode=compat
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ebmops demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --timeout=900 tests

bench: $(STAMP)
	$(BIN)/python -m pytest -q bench --benchmark-enable --benchmark-only -p no:randomly

clean:
	rm -rf .ebmops .pytest_cache .benchmarks
