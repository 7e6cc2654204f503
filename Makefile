# MobileInst: `make demo` runs the main job on synthetic data, `make test` the tests.
# Both create the Python 3.10 virtual environment in .venv on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
# glibc: keep freed memory in the heap instead of returning it to the OS (and
# faulting it back in on the next step); CPU training runs faster (docs/history.md).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 10000000000

.PHONY: install demo test data benchmark export clean

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	@PY310="$$(scripts/find_python310.sh)" && echo "Creating $(VENV) with $$PY310" && \
	  "$$PY310" -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -c "import mobileinst, detectron2; print('mobileinst', mobileinst.__version__, 'detectron2', detectron2.__version__)"
	@touch $(STAMP)

data: install
	$(PY) datasets/prepare_synthetic.py --root $(DETECTRON2_DATASETS)

demo: install
	$(PY) tools/quickstart.py --output output/quickstart

test: install
	$(PY) -m pytest -q tests

benchmark: install
	$(PY) tools/benchmark.py --config-file configs/coco/MobileInst_TopFormer_base_640.yaml --threads 1

clean:
	rm -rf output $(VENV)
