# Everything runs in a project-local virtual environment that these targets create from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: small, and what the tests and CPU benchmarks use. On a GPU machine install
# the CUDA build of torch first and then `pip install -e .[gpu]`.
TORCH ?= torch==2.13.0

.PHONY: setup test main mutations clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q -n 2

mutations: setup
	$(PY) tests/mutations.py

main: setup
	$(VENV)/bin/fwp-rl train configs/double_pole/nonmarkov_delta_error_cmaes.yaml
	$(VENV)/bin/fwp-rl bench cores --seq-lens 32,128

clean:
	rm -rf $(VENV) runs .pytest_cache
