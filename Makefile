# Two commands do everything on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The venv is reused while the lock and the project metadata are unchanged.
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)

DEMO := demo
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test serve demo study clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/slpt demo --dir $(DEMO)

serve: demo
	$(BIN)/slpt serve --studies $(DEMO)/studies --host $(HOST) --port $(PORT)

# The label-efficiency study spans sessions: its records are kept in git under docs/results/simulation/$(STUDY), with
# the backbone the study was run on (made by the first session, checked against run.json's SHA-256 by every later one,
# on any machine); runs/$(STUDY) holds what can be made again (cohort, caches, trained models). Commit the records after.
STUDY ?= lesion
STUDY_MINUTES ?= 120
study: install
	$(BIN)/slpt simulate --synthetic --profile $(STUDY) --out runs/$(STUDY) --records docs/results/simulation/$(STUDY) \
		--stop-after $(STUDY_MINUTES)

clean:
	rm -rf $(VENV) $(DEMO)
