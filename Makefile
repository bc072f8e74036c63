# The two entry points a newcomer needs: `make demo` and `make test`.
VENV := .venv
CC := $(VENV)/bin/countycloud

.PHONY: demo test host lint

demo: host
	$(CC) demo $(ARGS)

test: host
	bash scripts/test.sh

host:
	bash scripts/host-setup.sh

lint: host
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
