# Two commands set everything up on a fresh Debian machine: `make demo` and `make test`.
# Both create or update .venv first; a second call finds the stamp and does nothing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.radsynth-installed
CORES ?= 2
# Debian packages (tools/ensure-system-deps.sh): R for everything (statistics through rpy2);
# Chromium only when the tests are among the goals (browser tests of the rating form), SLURM and
# munge with the tests or slurm-test (tests/test_slurm.py runs a one-node cluster), so that
# `make demo` installs only what the demo uses. One call, so apt-get runs at most once.
SYSTEM_DEPS := r $(if $(filter test,$(MAKECMDGOALS)),chromium) $(if $(filter test slurm-test,$(MAKECMDGOALS)),slurm)

.PHONY: setup system-deps demo test slurm-test bench lint mutate schema

setup: system-deps $(STAMP)

system-deps:
	@tools/ensure-system-deps.sh $(SYSTEM_DEPS)

# torch first, from the pinned release (a CPU-capable CUDA build; the same wheel runs on the cluster).
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "radsynth needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# The run, then its one-page HTML report (every figure and key table, with captions).
demo: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

# Two workers, a test file each at a time (pytest-xdist): the end-to-end and SLURM files spend much
# of their time waiting on subprocesses and the scheduler, so the other tests fill those gaps.
test: setup
	$(BIN)/python -m pytest -n $(CORES) --dist loadfile --durations=20

# The demo through a real one-node SLURM cluster and profiles/slurm (also part of `make test`).
slurm-test: setup
	$(BIN)/python -m pytest tests/test_slurm.py

# The config's JSON schema is generated from its models (radsynth/core/settings/); run after
# changing a model. tests/test_config.py fails while the committed schema is stale.
schema: setup
	$(BIN)/python -m radsynth.core.settings.schema

# Mutation testing of the core modules (tools/mutate/: modules, their tests, explained survivors);
# slow, so not part of `make test`. Report in .mutate/report.md.
mutate: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,mutate]'
	$(BIN)/python tools/mutate/mutate.py $(MUTATE)

bench: setup
	$(BIN)/python bench/run.py $(BENCH)

# The same gates run inside `make test` (tests/test_workflow_static.py, tests/test_lint.py); what ruff
# covers is set in pyproject.toml.
lint: setup
	$(BIN)/python -m radsynth.core.settings.schema --check
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow
