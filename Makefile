# Set-up and the two jobs of the README. `make demo` and `make test` each do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# On a machine without a GPU the CPU build of PyTorch is installed. Where the package index would hand out a
# CUDA build for this pin, add TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
PIP = $(VENV)/bin/python -m pip

.PHONY: setup demo test bench-train bench-predict bench-accuracy bench-seeds bench-read clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: installing the default PyTorch build"; $(PIP) install -q "torch>=2.1"; \
	else \
		echo "no GPU: installing the CPU build of PyTorch ($(TORCH_SPEC))"; \
		$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)); \
	fi
	$(PIP) install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/gsrcl demo -o demo_output

test: setup
	$(VENV)/bin/python -m pytest -q

bench-read: setup
	$(VENV)/bin/python benchmarks/read_memory.py

bench-train: setup
	$(VENV)/bin/python benchmarks/train.py

bench-predict: setup
	$(VENV)/bin/python benchmarks/predict.py

ACCURACY ?=
bench-accuracy: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/python benchmarks/accuracy.py $(ACCURACY)

SEEDS ?= --tasks pbmc3k_to_kang --methods afrcl,svm,celltypist --seeds 1111,1112,1113,1114,1115
bench-seeds: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/python benchmarks/seeds.py $(SEEDS)

clean:
	rm -rf $(VENV) demo_output benchmarks/scratch
