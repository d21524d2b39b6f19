# make install  - Debian packages (as root) + .venv with the project, editable
# make test     - the whole test suite
# make demo     - the end-to-end demo (see README; root: Mininet and Open vSwitch)
# make demo-offline - the offline demo (iotclass on a capture, no switch)
# make bench    - the benchmarks behind the README's results table

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install debs test demo demo-offline bench clean

install: debs $(STAMP)

debs:
	@sh scripts/install-debs.sh

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	# compile the numba kernels once, into the package's __pycache__
	$(PY) -c "from classifier.capture.decode import warm_up; warm_up()"
	touch $(STAMP)

test: install
	$(VENV)/bin/pytest -q

demo: install
	$(PY) -m topologies.demo

demo-offline: install
	$(PY) -m topologies.offline_demo

bench: install
	$(VENV)/bin/python -m benchmarks.parsing
	$(VENV)/bin/python -m benchmarks.pools
	$(VENV)/bin/python -m benchmarks.models
	$(VENV)/bin/python -m benchmarks.controller packet-ins
	$(VENV)/bin/python -m benchmarks.controller memory
	$(VENV)/bin/python -m benchmarks.flood --baseline-macs 20000
	$(VENV)/bin/python -m benchmarks.web
	$(VENV)/bin/python -m benchmarks.ofconn

clean:
	rm -rf $(VENV) build *.egg-info
