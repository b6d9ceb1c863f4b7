# The two commands of the README. Each makes the virtual environment on first use.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test e2e unit clean

demo: $(STAMP)
	$(VENV)/bin/mqstream demo

test: $(STAMP)
	$(PYTHON) -m pytest

unit: $(STAMP)
	$(PYTHON) -m pytest -m "not e2e"

e2e: $(STAMP)
	$(PYTHON) -m pytest -m e2e

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf var .pytest_cache
