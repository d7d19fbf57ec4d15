# Two commands on a fresh machine: `make demo` (a simulated autonomous experiment) and `make test`.
#
# torch is installed on its own first, pinned by TORCH_SPEC, from TORCH_INDEX: torch's CPU-only wheel
# index by default (about 200 MB on Linux, where the default index's wheel pulls several GB of CUDA
# libraries). When that index cannot be reached within TORCH_INDEX_TIMEOUT seconds, or has no wheel
# for this machine, torch comes from pip's usual index instead.
#   make demo TORCH_SPEC='torch==2.5.1'   another pin
#   make demo TORCH_INDEX=                pip's usual index (on Linux: the CUDA build)
#   make demo TORCH_SPEC=                 install no torch here: keep the one in $(VENV) (your own CUDA build)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_TIMEOUT ?= 5
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STEPS ?=
OVERWRITE ?=
DEMO_OUT := runs/demo

.PHONY: setup demo test test-slow lint typecheck bench clean

# exit 0 when URL answers within T seconds; the thread bounds the name lookup too, which urlopen's
# own timeout does not
REACHABLE := 'import sys, threading, urllib.request as r; ok = []; \
	t = threading.Thread(target=lambda: ok.append(r.urlopen(sys.argv[1], timeout=float(sys.argv[2]))), daemon=True); \
	t.start(); t.join(float(sys.argv[2])); sys.exit(0 if ok else 1)'

$(BIN)/aexp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifneq ($(strip $(TORCH_SPEC)),)
	@if [ -n "$(TORCH_INDEX)" ] && $(BIN)/python -c $(REACHABLE) '$(TORCH_INDEX)/' '$(TORCH_INDEX_TIMEOUT)' 2>/dev/null; then \
		echo "installing $(TORCH_SPEC) from $(TORCH_INDEX)"; \
		$(BIN)/python -m pip install --index-url '$(TORCH_INDEX)' '$(TORCH_SPEC)' \
		|| { echo "no $(TORCH_SPEC) for this machine at $(TORCH_INDEX): trying pip's usual index"; \
		     $(BIN)/python -m pip install '$(TORCH_SPEC)'; }; \
	else \
		echo "$(if $(TORCH_INDEX),$(TORCH_INDEX) not reachable within $(TORCH_INDEX_TIMEOUT) s,TORCH_INDEX is empty): installing $(TORCH_SPEC) from pip's usual index"; \
		$(BIN)/python -m pip install '$(TORCH_SPEC)'; \
	fi
endif
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

setup: $(BIN)/aexp

# A previous demo is replaced only when asked: OVERWRITE=1, or "y" at the prompt in a terminal.
demo: setup
	@if [ -e $(DEMO_OUT) ] && [ "$(OVERWRITE)" != 1 ]; then \
		if [ -t 0 ]; then \
			printf '%s exists. Replace it? [y/N] ' '$(DEMO_OUT)'; read answer; \
			case "$$answer" in [yY]|[yY][eE][sS]) ;; \
			*) echo "kept $(DEMO_OUT); make demo OVERWRITE=1 replaces it"; exit 1;; esac; \
		else \
			echo "$(DEMO_OUT) exists: kept. make demo OVERWRITE=1 replaces it (or move it away first)"; exit 1; \
		fi; \
	fi
	$(BIN)/aexp run configs/plasmonic-dkl.yaml --out $(DEMO_OUT) --seed 0 --overwrite $(if $(STEPS),--steps $(STEPS),)

# the default suite on TEST_WORKERS processes (pytest-xdist), one torch thread each: two processes
# with torch's default threads each would fight over the cores (docs/benchmarks.md, the thread policy)
TEST_WORKERS ?= 2
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# the statistical and long tests (learning beats random, angle recovery, kill -9 campaigns)
test-slow: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS) --timeout 3600

lint: setup
	$(BIN)/ruff check aexp drivers simulators tests benchmarks examples

# the package's types, with the pydantic plugin (settings: [tool.mypy] in pyproject.toml)
typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/aexp bench configs/plasmonic-dkl.yaml --seeds 0,1,2,3,4 --json bench.json

data/grid.npz: | $(BIN)/aexp
	$(BIN)/python -m simulators.grid_dataset --out $@ --seed 0 --stride 2 \
		--option survey_pixels=128 --option n_particles=8 --option dose=200

clean:
	rm -rf $(VENV) runs *.egg-info
