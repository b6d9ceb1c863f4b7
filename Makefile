# The two commands of the README. Each makes the virtual environment on first use.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

# Debian packages the tests use: a real Prometheus (and promtool), kcat, docker-compose,
# Chromium and its driver (the explorer page in a real browser).
SYSTEM_TOOLS := prometheus promtool kcat docker-compose java mvn chromium chromedriver
APT_PACKAGES := prometheus kcat docker-compose default-jre-headless maven chromium chromium-driver

.PHONY: demo up down test e2e unit bench system clean

demo: $(STAMP)
	$(VENV)/bin/mqstream demo

# the demo's loop left running (broker, worker, Prometheus) to look around; `make down` stops it
up: $(STAMP) system
	$(VENV)/bin/mqstream up

down: $(STAMP)
	$(VENV)/bin/mqstream down

test: $(STAMP) system
	$(PYTHON) -m pytest --durations=15

unit: $(STAMP)
	$(PYTHON) -m pytest -m "not slow"

e2e: $(STAMP) system
	$(PYTHON) -m pytest -m e2e

# The eight benchmarks at the sizes the targets name, one after another on this tree (~45 min),
# and a py-spy profile of the ingest path (bench/profile-ingest.md)
bench: $(STAMP) system
	rm -f bench/results.json
	nice -n 10 $(PYTHON) -m bench ingest scaleout
	nice -n 10 $(PYTHON) -m bench ingest --profile 30
	nice -n 10 $(PYTHON) -m bench latency recovery --items 100000
	nice -n 10 $(PYTHON) -m bench latency --items 20000 --profile 40
	nice -n 10 $(PYTHON) -m bench memory --table-items 100000
	nice -n 10 $(PYTHON) -m bench memory --table-items "" --items 1000000 --closes 1
	nice -n 10 $(PYTHON) -m bench refresh close
	nice -n 10 $(PYTHON) -m bench readers

system:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,peers,bench]'
	rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf var .pytest_cache
