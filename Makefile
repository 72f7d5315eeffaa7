# latent-shards — every target installs what it needs into .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.DEFAULT_GOAL := help
.PHONY: help install test test-all demo bench lint photos pretrain default-codec mean-scale-codec eval-codecs scenes-codecs eval \
	nonlinearity-ablation clean

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

# The bundled rate ladder (#20): scale-only hyperpriors (N=64, M=96) trained on the bundled
# photos and Debian's wallpaper photographs (`make photos`; its 12 held-out ones are never
# read), crops at three scales. The default is trained from scratch; every other point is
# fine-tuned from it at its own λ; then each gets an exact integer h_s and the ladder is
# evaluated on the held-out photographs. Every run resumes (--resume): an interrupted
# `make default-codec` goes on where it stopped. JOBS=3 fine-tunes the three at once.
LADDER_TRAIN := --codec-arch bmshj2018-hyperprior --N 64 --M 96 --batch-size 8 --patch 128 --seed 0 \
	--threads 1 --photos data/photos --scales 1.0,0.5,0.25 --heldout data/photos/heldout \
	--heldout-every 1000 --resume
LADDER := lowest-rate low-rate high-rate
LMBDA_lowest-rate := 0.0018
LMBDA_low-rate := 0.004
LMBDA_high-rate := 0.07
WEIGHTS := pipeline/codec/weights

data/photos/photos.json: | $(STAMP)
	$(BIN)/latents fetch-photos data/photos

default-codec: $(STAMP) data/photos/photos.json ## Retrain the bundled rate ladder from scratch (hours: see the README), integerise, evaluate
	mkdir -p runs/ladder
	$(BIN)/latents train-codec runs/ladder/default-float.pt $(LADDER_TRAIN) --lmbda 0.013 --steps 60000 --lr 3e-4
	$(MAKE) -j$${JOBS:-1} $(LADDER:%=ladder-%)
	for p in default $(LADDER); do \
	  $(BIN)/latents integerize runs/ladder/$$p-float.pt $(WEIGHTS)/$$p.pt --threads 1 || exit 1; done
	$(BIN)/latents eval rd --plot runs/rd-ladder.png --output runs/rd-ladder.json --results-dir runs/rd-ladder

ladder-%: $(STAMP)
	$(BIN)/latents train-codec runs/ladder/$*-float.pt $(LADDER_TRAIN) --lmbda $(LMBDA_$*) --steps 20000 \
	  --lr 1e-4 --init-from runs/ladder/default-float.pt

# GDN against cheaper non-linearities (#20): three slim hyperpriors (N=64, M=96) trained from
# scratch for the same steps on the same crops; their held-out figures are the last line of
# each run's log, their encode cost what `latents bench --no-pipeline` prints.
NONLINEARITIES := gdn sgdn relu
ARCH_gdn := slim-hyperprior
ARCH_sgdn := slim-hyperprior-sgdn
ARCH_relu := slim-hyperprior-relu
nonlinearity-ablation: $(STAMP) data/photos/photos.json ## GDN vs simplified GDN vs ReLU: held-out R-D after equal steps, g_a cost
	mkdir -p runs/nonlinearity
	$(MAKE) -j$${JOBS:-1} $(NONLINEARITIES:%=nonlinearity-%)
	for n in $(NONLINEARITIES); do \
	  $(BIN)/latents bench --checkpoint runs/nonlinearity/$$n.pt --no-pipeline \
	    --output runs/nonlinearity/$$n-bench.json || exit 1; done

nonlinearity-%: $(STAMP)
	$(BIN)/latents train-codec runs/nonlinearity/$*.pt --codec-arch $(ARCH_$*) --N 64 --M 96 --lmbda 0.013 \
	  --steps 3000 --batch-size 8 --patch 128 --lr 3e-4 --seed 0 --threads 1 --photos data/photos \
	  --scales 1.0,0.5,0.25 --heldout data/photos/heldout --heldout-every 500 --resume

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

# The scenes task (VOC layout, 12 classes, 160 train / 40 val) and its few-shot split
SCENES := runs/scenes
PRETRAIN := runs/pretrain
$(SCENES)/fewshot.json: | $(STAMP)
	$(BIN)/latents make-task $(SCENES) --detection

# The detection-informed pair on the scenes task: the default codec fine-tuned for rate–distortion
# alone (scenes-rd) and with Faster R-CNN's losses on ŷ of the task's windows (scenes-det, Eq. 6).
SCENES_FINETUNE := $(FINETUNE) --init-from $(WEIGHTS)/default.pt --lmbda 0.013 --resume
SCENES_DET := --utility detect --task-source $(SCENES) --lmbda-t 1 --task-batch-size 4 --task-patch 128
scenes-codecs: $(STAMP) $(SCENES)/fewshot.json ## Train the rd / detection-informed pair on the scenes task, integerise both
	$(BIN)/latents train-codec runs/scenes-rd-float.pt $(SCENES_FINETUNE)
	$(BIN)/latents train-codec runs/scenes-det-float.pt $(SCENES_FINETUNE) $(SCENES_DET)
	for c in rd det; do \
	  $(BIN)/latents integerize runs/scenes-$$c-float.pt runs/scenes-$$c.pt --steps 0 --threads 1 || exit 1; done

eval: $(STAMP) $(TASK)/fewshot.json $(SCENES)/fewshot.json $(PRETRAIN)-y/model.pt $(PRETRAIN)-px/model.pt ## Every table: R-D, utility (grey-textures), detection / segmentation / few-shot (scenes); about 80 min
	mkdir -p runs
	$(BIN)/latents eval rd --plot runs/rd-holdout.png --output runs/rd-holdout.json --results-dir runs/rd-holdout \
	  --baseline bundled:textures-rd-low --baseline bundled:textures-rd-mid \
	  --baseline bundled:textures-task-low --baseline bundled:textures-task-mid
	$(BIN)/latents eval utility --source $(TASK) --work runs/eval-utility --seeds 3 --epochs 10 \
	  --codec rd=bundled:textures-rd-low --codec rd=bundled:textures-rd-mid \
	  --codec task=bundled:textures-task-low --codec task=bundled:textures-task-mid \
	  --plot runs/eval-utility.png --output runs/eval-utility.json
	$(BIN)/latents eval downstream --source $(SCENES) --work runs/eval-downstream --codec rd=bundled:default \
	  --task detect --task segment --init pretrained --init-latent $(PRETRAIN)-y/model.pt \
	  --init-pixels $(PRETRAIN)-px/model.pt --seeds 3 --epochs 8 --fewshot $(SCENES)/fewshot.json \
	  --output runs/eval-downstream.json

# The seed's transfer protocol on CPU: a trunk pretrained on the 72-class tiles task, once on ŷ
# (the default codec) and once on pixels, for `train detect / segment --init-from`.
pretrain: $(PRETRAIN)-y/model.pt $(PRETRAIN)-px/model.pt ## Pretrain sResNet-18 on ŷ and ResNet-18 on pixels of the tiles task (runs/pretrain-*/model.pt)

$(PRETRAIN)/fewshot.json: | $(STAMP)
	$(BIN)/latents make-task $(PRETRAIN) --kind tiles

$(PRETRAIN)-y/model.pt: $(PRETRAIN)/fewshot.json
	$(BIN)/latents convert $(PRETRAIN) $(PRETRAIN)-latents --size 0 --executor local
	$(BIN)/latents train classify --data $(PRETRAIN)-latents --model sresnet18 --epochs 12 --window 6 \
	  --augment window --out $(PRETRAIN)-y --resume

$(PRETRAIN)-px/model.pt: $(PRETRAIN)/fewshot.json
	$(BIN)/latents train classify --data $(PRETRAIN) --pixels --model resnet18 --epochs 12 --window 6 \
	  --augment window --out $(PRETRAIN)-px --resume

clean: ## Remove .venv and demo output
	rm -rf $(VENV) $(DEMO_OUT)
