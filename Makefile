# `make lab`  - set up .venv if needed, then open JupyterLab on notebooks/ (127.0.0.1, token auth)
# `make test` - set up .venv if needed, then run every test tier that this machine supports
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Without an NVIDIA GPU, pin the CPU versions the stored outputs were recorded with;
# with one, leave torch/triton to pip's defaults (CUDA builds). Override with PINS=.
PINS   ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
PORT   ?= 8888

.PHONY: lab test test-ch setup doctor progress bench gpu-check update clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PINS) -e '.[dev]'
	$(PY) -m course_utils doctor
	touch $(STAMP)

lab: $(STAMP)
	$(PY) -m course_utils lab --port $(PORT)

# The any-CPU tier: the notebooks' stored outputs (and the claims of the cells that skip exact
# comparison) must also reproduce with PyTorch's non-vectorised CPU kernels on one thread, another
# arithmetic order, as on another learner's CPU. The re-runs of stored grids (marker `rerun`, minutes each)
# run once, in the first pass; the claims drawn from the stored grids are asserted in both.
ANY_CPU := ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1

test: $(STAMP)
	$(PY) -m pytest
	$(ANY_CPU) $(PY) -m pytest -p no:cacheprovider -m "not rerun" notebooks tests/test_notebook_claims.py tests/test_claims_*.py

# one chapter's tests (maintainers): `make test-ch CH=5`
test-ch: $(STAMP)
	$(PY) -m course_utils test-chapter $(CH)

doctor: $(STAMP)
	$(PY) -m course_utils doctor

bench: $(STAMP)
	$(PY) -m course_utils.harness.bench --csv bench.csv

# On a machine with an NVIDIA GPU: the kernel tests compiled and the benchmark, in gpu-report.md
gpu-check: $(STAMP)
	$(PY) -m course_utils gpu-check --report gpu-report.md

# bring in the latest course without losing a line written in the notebooks (backups in .course-backups/)
update: $(STAMP)
	$(PY) -m course_utils update

progress: $(STAMP)
	$(PY) -m course_utils progress

clean-venv:
	rm -rf $(VENV)
