# Two entry points for a newcomer: `make demo` and `make test`.
# Both create .venv with the project and its extras on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck check bench clean container-test constraints

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/seedance-watch demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The inner loop: everything but the long integration tests (marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The container smoke test: build the image, turn a drop into a video in it, check the
# owner, the mode, the HEALTHCHECK, a subcommand and a clean stop (docker/smoke-test.sh;
# as root: it installs podman, runc and debootstrap when they are missing).
container-test: $(STAMP)
	PYTHON=$(BIN)/python bash docker/smoke-test.sh

# docker/constraints.txt: the runtime dependencies as they resolve today, from a clean
# venv with the project and no extras (run it with the image's Python, 3.11).
constraints:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install --quiet . && \
	{ grep '^#' docker/constraints.txt; "$$tmp/venv/bin/python" -m pip freeze --exclude seedance-watch; } \
		> "$$tmp/constraints.txt" && \
	mv "$$tmp/constraints.txt" docker/constraints.txt && rm -rf build daemon/*.egg-info

clean:
	rm -rf $(VENV) demo build *.egg-info daemon/*.egg-info
