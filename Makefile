# Every target installs the pinned requirements into .venv first if they are missing or changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SWEEP  ?= simclr_optuna
DIR    ?= outputs

.DEFAULT_GOAL := help
.PHONY: help install train test clean atlas bench gpu-check sweep report export table shards

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-9s %s\n", $$1, $$2}'
	@echo "  extra arguments: make train ARGS='method=simclr data=folder data.root=...'"

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

install: $(STAMP)  ## create .venv and install the pinned requirements

train: $(STAMP)  ## pretrain the default experiment (SimCLR on the bundled digits, CPU, ~2 min)
	$(PY) train.py $(ARGS)

sweep: $(STAMP)  ## Optuna search, then report.md/.png in its dir (default: SimCLR on digits, <20 min on 2 CPUs); SWEEP=<conf/hparams_search name>
	$(PY) train.py -m hparams_search=$(SWEEP) $(ARGS)

report: $(STAMP)  ## compare the runs below DIR (default: outputs) in DIR/report.md + report.png
	$(PY) scripts/compare.py $(DIR)

export: $(STAMP)  ## backbone alone, loadable into stock torchvision/timm: make export CKPT=<run>/checkpoints/last.ckpt [ARGS=format=timm]
	$(PY) scripts/export.py ckpt_path=$(CKPT) $(ARGS)

PEERS  := $(VENV)/.peers-installed
$(PEERS): requirements-peers.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-peers.txt
	@touch $@

table: $(PEERS)  ## each method vs lightly's at equal wall-clock on the CIFAR sample (~1 h on 2 CPUs; outputs/table/<time>/results.md)
	$(PY) benchmarks/peer_table.py $(ARGS)

atlas: $(STAMP)  ## the learning atlas: kNN vs steps/seconds for every *_cpu_short recipe on the CIFAR sample (~1 h on 2 CPUs; outputs/atlas/<time>/)
	$(PY) benchmarks/steps_to_learn.py $(ARGS)

shards: $(STAMP)  ## LitData shards for data=shards: make shards ARGS='data=folder data.root=DIR out=OUT' (docs/shards.md)
	$(PY) scripts/make_shards.py $(ARGS)

bench: $(STAMP)  ## time a training step: module vs bare PyTorch, loader (outputs/bench/<time>/bench.json)
	$(PY) scripts/bench.py $(ARGS)

gpu-check: $(STAMP)  ## every CUDA path on one GPU in <= 9 min, table + gpu_check.json (ARGS='data_root=<CIFAR sample>' adds the recipes; --dry-run on a CPU)
	$(PY) scripts/gpu_check.py $(ARGS)

test: $(STAMP)  ## lint and format check (ruff, pyproject.toml), then run the whole test suite
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(ARGS)

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs/train outputs/eval outputs/bench outputs/gpu_check multirun .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
