# ncdepth developer commands. `make train` and `make test` create the virtualenv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOK_STAMP := $(VENV)/.installed-notebook
# The report directory `make notebook` opens: absolute, or relative to this directory.
REPORT ?= $(or $(NCDEPTH_REPORT_DIR),multirun/depth/report)

.PHONY: install train test test-slow bench lint notebook wheel clean slurm

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/ncdepth-train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -m slow $(PYTEST_ARGS)

# A single-node Slurm cluster with accounting on this machine (Debian/Ubuntu, as root, no systemd
# needed), for the tests marked `slurm`: installs slurm-wlm, slurmdbd, munge and MariaDB, then starts
# munged, MariaDB, slurmdbd, slurmctld and slurmd. Idempotent; writes /etc/slurm/.
slurm:
	scripts/slurm/install.sh
	scripts/slurm/start.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(ARGS)

notebook: $(NOTEBOOK_STAMP)  # Jupyter refuses root unless told (containers, CI machines)
	NCDEPTH_REPORT_DIR='$(REPORT)' $(BIN)/jupyter-lab notebooks/analysis.ipynb \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

$(NOTEBOOK_STAMP): $(STAMP)
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev,notebook]'
	touch $(NOTEBOOK_STAMP)

# dist/ncdepth-<version>-py3-none-any.whl, to install where ncdepth is not on an index (README, "Install").
# pip builds it in an isolated environment (fetching setuptools) unless ARGS="--no-build-isolation".
wheel:
	$(PYTHON) -m pip wheel --no-deps -w dist $(ARGS) .

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks $(wildcard scripts)
	$(BIN)/ruff format --check src tests benchmarks $(wildcard scripts)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache build dist
