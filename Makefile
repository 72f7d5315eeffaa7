# latent-shards — every target installs what it needs into .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.DEFAULT_GOAL := help
.PHONY: help install test test-all demo bench lint default-codec clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py pipeline/codec/native/rans.c pipeline/codec/native/module.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install latent-shards with its dev tools

test: $(STAMP) ## Run the test suite (without the slow marker)
	$(BIN)/pytest -q

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/pytest -q -m ''

demo: $(STAMP) ## Convert the bundled photos with the default codec into $(DEMO_OUT)/
	$(BIN)/latents demo $(DEMO_OUT)

bench: $(STAMP) ## Measure conversion stages, convert and loader throughput, default and mean-scale codecs (a few minutes)
	mkdir -p runs
	$(BIN)/latents bench --output runs/bench.json
	$(BIN)/latents bench --checkpoint bundled:mbt2018-mean --output runs/bench-mbt2018-mean.json

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check pipeline jobs tests

default-codec: $(STAMP) ## Retrain the bundled default codec (about 80 min on one CPU core), then evaluate it
	mkdir -p runs
	$(BIN)/latents train-codec runs/default.pt --arch mbt2018-mean --N 64 --M 96 --lmbda 0.013 \
		--steps 15300 --batch-size 8 --patch 128 --lr 3e-4 --seed 0 --threads 1
	cp runs/default.pt pipeline/codec/weights/default.pt
	$(BIN)/latents eval-codec --all-photos

clean: ## Remove .venv and demo output
	rm -rf $(VENV) $(DEMO_OUT)
