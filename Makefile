# ecg-monitor: the README's commands. Everything installs into .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: install demo test test-faults bench lint mosquitto clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on this machine's disk; any other torch request downloads CUDA.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,train]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/ecg-monitor demo --patients 8 --duration 90

# The tests need a real broker (mosquitto, mosquitto_passwd) and the openssl CLI (test certificates).
mosquitto:
	@if { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } && command -v openssl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto and openssl from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto openssl >/dev/null; \
	else \
		echo "mosquitto or openssl is missing: install them (sudo apt-get install mosquitto openssl) and run make test again" >&2; exit 1; \
	fi

# The developer loop: everything but the fault-injection runs (about 5 min on 2 cores).
test: install mosquitto
	$(VENV)/bin/pytest -q -m "not faults"

# Fault injection with real brokers, sockets and processes; .ci/run runs it after make test.
test-faults: install mosquitto
	$(VENV)/bin/pytest -q -m faults

bench: install
	$(VENV)/bin/ecg-monitor bench --out reports/bench.md

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
