# latent-shards — every target installs what it needs into .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.DEFAULT_GOAL := help
.PHONY: help install test test-all demo bench lint photos pretrain default-codec mean-scale-codec eval-codecs eval clean

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

photos: $(STAMP) ## Fetch Debian's wallpaper photographs into data/photos (train/, heldout/, photos.json)
	$(BIN)/latents fetch-photos data/photos

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check pipeline jobs tests

# The bundled codecs: scale-only hyperpriors (N=64, M=96) at three λ, warm-started from the
# bundled mean-scale codec's g_a / g_s / h_a, each then given an exact integer h_s.
CODEC_TRAIN := --codec-arch bmshj2018-hyperprior --N 64 --M 96 --batch-size 8 --patch 128 --lr 3e-4 --seed 0 \
	--threads 1 --init-from pipeline/codec/weights/mbt2018-mean.pt
WEIGHTS := pipeline/codec/weights

default-codec: $(STAMP) ## Retrain the three bundled codecs (about 70 min each on one core; JOBS=3 runs them at once), evaluate
	$(MAKE) -j$${JOBS:-1} runs/default-float.pt runs/low-rate-float.pt runs/high-rate-float.pt
	$(BIN)/latents integerize runs/default-float.pt $(WEIGHTS)/default.pt --threads 1
	$(BIN)/latents integerize runs/low-rate-float.pt $(WEIGHTS)/low-rate.pt --threads 1
	$(BIN)/latents integerize runs/high-rate-float.pt $(WEIGHTS)/high-rate.pt --threads 1
	$(BIN)/latents eval rd --plot runs/rd-holdout.png --output runs/rd-holdout.json --results-dir runs/rd-holdout
	$(BIN)/latents eval rd --all-photos --plot runs/rd-all.png --output runs/rd-all.json

runs/default-float.pt:
	mkdir -p runs
	$(BIN)/latents train-codec $@ $(CODEC_TRAIN) --lmbda 0.013 --steps 22000

runs/low-rate-float.pt:
	mkdir -p runs
	$(BIN)/latents train-codec $@ $(CODEC_TRAIN) --lmbda 0.004 --steps 12000

runs/high-rate-float.pt:
	mkdir -p runs
	$(BIN)/latents train-codec $@ $(CODEC_TRAIN) --lmbda 0.07 --steps 12000

mean-scale-codec: $(STAMP) ## Re-derive the bundled mean-scale codec's integer h_s from its float weights
	$(BIN)/latents integerize $(WEIGHTS)/mbt2018-mean.pt $(WEIGHTS)/mbt2018-mean.pt --threads 1

# The grey-textures pair: the bundled low-rate and default codecs each fine-tuned for the same
# steps on the same reconstruction crops, once for rate–distortion alone (rd) and once with
# the classification loss on the task's train split (task, Eq. 6); then an integer h_s each.
TASK := runs/grey-textures
FINETUNE := --codec-arch bmshj2018-hyperprior --N 64 --M 96 --batch-size 8 --patch 128 --lr 1e-4 --seed 0 \
	--threads 1 --steps 2000
UTILITY := --utility classify --task-source $(TASK) --lmbda-t 1 --task-batch-size 8 --task-patch 128
TEXTURE_CODECS := rd-low task-low rd-mid task-mid

$(TASK)/fewshot.json: | $(STAMP)
	$(BIN)/latents make-task $(TASK) --kind grey-textures

eval-codecs: $(STAMP) $(TASK)/fewshot.json ## Retrain the grey-textures rd/task codec pairs (about 30 min with JOBS=2), ship them
	$(MAKE) -j$${JOBS:-1} $(foreach c,$(TEXTURE_CODECS),runs/textures-$(c)-float.pt)
	for c in $(TEXTURE_CODECS); do \
	  $(BIN)/latents integerize runs/textures-$$c-float.pt $(WEIGHTS)/textures-$$c.pt --steps 0 --threads 1 || exit 1; done

runs/textures-rd-low-float.pt:
	$(BIN)/latents train-codec $@ $(FINETUNE) --init-from $(WEIGHTS)/low-rate.pt --lmbda 0.004

runs/textures-task-low-float.pt:
	$(BIN)/latents train-codec $@ $(FINETUNE) --init-from $(WEIGHTS)/low-rate.pt --lmbda 0.004 $(UTILITY)

runs/textures-rd-mid-float.pt:
	$(BIN)/latents train-codec $@ $(FINETUNE) --init-from $(WEIGHTS)/default.pt --lmbda 0.013

runs/textures-task-mid-float.pt:
	$(BIN)/latents train-codec $@ $(FINETUNE) --init-from $(WEIGHTS)/default.pt --lmbda 0.013 $(UTILITY)

eval: $(STAMP) $(TASK)/fewshot.json ## Both evals from the shipped codecs: R-D on held-out photos, utility on grey-textures (< 30 min)
	mkdir -p runs
	$(BIN)/latents eval rd --plot runs/rd-holdout.png --output runs/rd-holdout.json --results-dir runs/rd-holdout \
	  --baseline bundled:textures-rd-low --baseline bundled:textures-rd-mid \
	  --baseline bundled:textures-task-low --baseline bundled:textures-task-mid
	$(BIN)/latents eval utility --source $(TASK) --work runs/eval-utility --seeds 3 --epochs 10 \
	  --codec rd=bundled:textures-rd-low --codec rd=bundled:textures-rd-mid \
	  --codec task=bundled:textures-task-low --codec task=bundled:textures-task-mid \
	  --plot runs/eval-utility.png --output runs/eval-utility.json

# The seed's transfer protocol on CPU: a trunk pretrained on the 72-class tiles task, once on ŷ
# (the default codec) and once on pixels, for `train detect / segment --init-from`.
PRETRAIN := runs/pretrain
pretrain: $(STAMP) ## Pretrain sResNet-18 on ŷ and ResNet-18 on pixels of the tiles task (runs/pretrain-*/model.pt)
	$(BIN)/latents make-task $(PRETRAIN) --kind tiles
	$(BIN)/latents convert $(PRETRAIN) $(PRETRAIN)-latents --size 0 --executor local
	$(BIN)/latents train classify --data $(PRETRAIN)-latents --model sresnet18 --epochs 12 --window 6 \
	  --augment window --out $(PRETRAIN)-y --resume
	$(BIN)/latents train classify --data $(PRETRAIN) --pixels --model resnet18 --epochs 12 --window 6 \
	  --augment window --out $(PRETRAIN)-px --resume

clean: ## Remove .venv and demo output
	rm -rf $(VENV) $(DEMO_OUT)
