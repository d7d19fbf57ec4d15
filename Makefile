# One overridable torch pin: `make test TORCH_SPEC='torch==2.5.1'`, or TORCH_SPEC= to keep your own torch.
TORCH_SPEC ?= torch==2.13.0
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STEPS ?=

.PHONY: setup demo test lint bench clean

$(BIN)/aexp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(TORCH_SPEC) -e '.[dev]'
	@touch $@

setup: $(BIN)/aexp

demo: setup
	$(BIN)/aexp run configs/plasmonic-dkl.yaml --out runs/demo --seed 0 --overwrite $(if $(STEPS),--steps $(STEPS),)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check aexp drivers simulators tests benchmarks

bench: setup
	$(BIN)/aexp bench configs/plasmonic-dkl.yaml --seeds 0,1,2,3,4 --json bench.json

data/grid.npz: | $(BIN)/aexp
	$(BIN)/python -m simulators.grid_dataset --out $@ --seed 0 --stride 2 \
		--option survey_pixels=128 --option n_particles=8 --option dose=200

clean:
	rm -rf $(VENV) runs *.egg-info
