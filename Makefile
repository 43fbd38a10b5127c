# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
VENV := .venv/bin
PYTEST_ARGS ?=
# pytest-xdist workers. Most of a test's time is waiting on servers and processes: on
# 2 cores, 3 workers ran the suite in 13:27, 2 workers in 15:34 (that run had a heavier
# partitions test, about 40 s of one worker more).
WORKERS ?= 3

.PHONY: bootstrap demo test lint typecheck unit bench clean systemd-score

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/python -m tests.harness.demo

# --dist loadfile keeps a module's tests (and their module fixtures) in one worker;
# --no-loadscope-reorder hands the files out slow ones first (tests/conftest.py).
test: bootstrap lint typecheck
	$(VENV)/pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

lint:
	$(VENV)/ruff check backupd jobs bench tests
	$(VENV)/ruff format --check backupd jobs bench tests
	$(VENV)/lint-imports

typecheck:
	$(VENV)/mypy

bench: bootstrap
	$(VENV)/python -m bench.run

unit: bootstrap
	$(VENV)/pytest -m "not e2e" $(PYTEST_ARGS)

# The hardening score of the daemon's unit (systemd/README.md); needs only systemd-analyze.
systemd-score:
	systemd-analyze security --offline=yes systemd/backupd.service | tail -1

clean:
	rm -rf var/ .pytest_cache .mypy_cache .ruff_cache
