# The README's two commands: `make run` and `make test`.
#
# `make run` installs what the service needs (`pip install -e .`), `make test` that and the
# test tools (`-e '.[test]'`); each has its own stamp, so neither skips the other's install.
# pip's output goes to $(PIP_LOG), shown only when pip fails, so that `make run` ends with
# kseg's banner and not a screenful of build messages.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
PIP_LOG    := $(VENV)/pip.log

.PHONY: run test lint bench install install-run clean

# pip install, quietly, into the venv; on failure the end of its log and where the rest is.
define pip_install
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "make: installing $(2) into $(VENV) (pip's output: $(PIP_LOG))"
	@{ $(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip \
	   && $(BIN)/python -m pip install --quiet --disable-pip-version-check $(1); } \
	   >$(PIP_LOG) 2>&1 \
	 || { tail -n 40 $(PIP_LOG); echo "make: pip install failed; its whole output is in $(PIP_LOG)"; exit 1; }
endef

$(RUN_STAMP): pyproject.toml
	$(call pip_install,-e .,kseg)
	@touch $@

$(TEST_STAMP): pyproject.toml
	$(call pip_install,-e '.[test]',kseg and its test tools)
	@touch $@ $(RUN_STAMP)

install-run: $(RUN_STAMP)

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	@$(BIN)/kseg up

test: $(TEST_STAMP)
	@bash tests/browser/install.sh || echo "make test: could not install Chromium; browser tests will skip (or fail under CI)"
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(RUN_STAMP)
	$(BIN)/python bench/bench_core.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
