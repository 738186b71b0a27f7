# Smart Energy — every target installs what it needs first. See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SE := $(VENV)/bin/smart-energy
DATA ?= ../shared/data/household_power_consumption_2006-12_2007-02.txt
# Debian packages the tests and benchmarks run for real: promtool + prometheus, its pushgateway, redis-server, wrk,
# chromium (the monitoring report opened in a real headless browser), a Java 17 runtime for Spark in local mode,
# haproxy (the weighted proxy that stands in for Knative's revision split in the canary test).
APT_PACKAGES := prometheus prometheus-pushgateway redis-server wrk chromium openjdk-17-jre-headless haproxy
PYTEST_ARGS ?=

.PHONY: install system-deps test demo bench backtest monitor lock compile cluster clean peers-env peers-lock

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@test -x $(PY) || uv venv --quiet --python 3.11 $(VENV)
	uv pip sync --quiet --python $(PY) requirements.lock
	uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $@

# Re-resolve the lock (exact pins, no URLs) after changing pyproject.toml.
lock:
	uv pip compile pyproject.toml --extra test --python-version 3.11 --no-header --no-annotate -o requirements.lock

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# Debian starts these as services on install; our tests start their own on free 127.0.0.1 ports.
	@-systemctl disable --now redis-server prometheus prometheus-pushgateway haproxy >/dev/null 2>&1 || true

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	@test -f "$(DATA)" || { echo "demo: no data file at $(DATA) (set DATA=path/to/household_power_consumption.txt)"; exit 2; }
	$(PY) -m smart_energy.demo --data $(DATA)

bench: install system-deps peers-env
	$(PY) benchmarks/run.py --data $(DATA)

# The peers of `make bench` (section peers: statsforecast, mlforecast, LightGBM) in their own venv, exact pins.
peers-env: .venv-peers/.installed

.venv-peers/.installed: benchmarks/peers.lock
	bash benchmarks/peers_env.sh install .venv-peers

# Re-resolve benchmarks/peers.lock (exact pins, no URLs), constrained by requirements.lock (never changed by it).
peers-lock:
	bash benchmarks/peers_env.sh lock

backtest: install
	$(SE) backtest --data $(DATA) --out reports/backtest
	@# day ahead: train without the last four weeks, score every origin hour of them (P10/P50/P90 vs baselines)
	$(SE) train --horizon 24 --data $(DATA) --model-dir reports/backtest/dayahead --holdout-weeks 4 > /dev/null
	$(SE) evaluate --model-dir reports/backtest/dayahead --data $(DATA) --last-weeks 4 > reports/backtest/dayahead.json
	$(PY) benchmarks/dayahead_summary.py reports/backtest/dayahead.json

# train without the data's last four weeks, then report on them: quality, drift over time, performance
monitor: install
	$(SE) train --data $(DATA) --model-dir reports/monitor/model --holdout-weeks 4
	$(SE) train --horizon 24 --data $(DATA) --model-dir reports/monitor/dayahead --holdout-weeks 4
	$(SE) monitor --data $(DATA) --last-weeks 4 --model-dir reports/monitor/model \
		--dayahead-model reports/monitor/dayahead --out reports/monitor

compile: install
	$(SE) pipeline compile

cluster:
	bash manifests/kind/cluster.sh

clean:
	rm -rf data artifacts reports .pytest_cache
