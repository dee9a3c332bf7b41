# Every target the README names. Each depends on `install`, so a fresh clone needs no manual step.
.PHONY: install train prepare archive serve stop test test-fast clean help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
MODEL_DIR ?= build/model
MODEL_STORE ?= model_store
MODEL_CONFIG ?= model-config.yaml
MAR       := $(MODEL_STORE)/classifier.mar
STAGE     ?= build/mar-extra
TRAIN_ARGS ?=
DATA      ?=
DATA_ARG  := $(if $(DATA),--data $(DATA))

help:
	@echo "make serve   install, train the default model if none exists, archive, start TorchServe, wait until READY"
	@echo "make test    install and run the whole test suite"
	@echo "make train   (re)train: DATA=DIR, TRAIN_ARGS='--epochs N ...'; metrics and plots go to runs/<timestamp>/"
	@echo "make prepare SRC=DIR DST=DIR   split a folder of class subfolders into DST/train and DST/val"
	@echo "make archive / make stop / make clean"

# ---------------------------------------------------------------- setup
install: $(STAMP)

$(STAMP): requirements.txt
	@command -v java >/dev/null 2>&1 || { echo "error: TorchServe needs Java 11 or later, and no 'java' is on PATH. Install a JDK/JRE (e.g. apt-get install openjdk-17-jre-headless)." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 11 ]; then echo "error: TorchServe needs Java 11 or later; found: $$(java -version 2>&1 | head -1)" >&2; exit 1; fi
	@command -v python3.11 >/dev/null 2>&1 && p=python3.11 || p=python3; \
	  test -x $(PY) || $$p -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# ---------------------------------------------------------------- model
# `make serve` trains only when no model exists; `make train` always trains.
$(MODEL_DIR)/model.pt2: | $(STAMP)
	$(PY) -m training.train --output-dir $(MODEL_DIR) $(DATA_ARG) $(TRAIN_ARGS)

train: $(STAMP)
	$(PY) -m training.train --output-dir $(MODEL_DIR) $(DATA_ARG) $(TRAIN_ARGS)

# Split a flat folder of class subfolders into DST/train and DST/val (hardlinks; copies across filesystems).
prepare: $(STAMP)
	@test -n "$(SRC)" -a -n "$(DST)" || { echo "usage: make prepare SRC=folder-of-class-folders DST=new-folder" >&2; exit 2; }
	$(PY) -m training.prepare $(SRC) $(DST) $(PREPARE_ARGS)

archive: $(MAR)

# The handler imports the `handlers` package, so it is staged as a folder inside the archive.
$(MAR): $(MODEL_DIR)/model.pt2 $(MODEL_DIR)/index_to_name.json handlers/*.py $(MODEL_CONFIG) | $(STAMP)
	rm -rf $(STAGE) && mkdir -p $(STAGE)/handlers $(MODEL_STORE)
	cp handlers/*.py $(STAGE)/handlers/
	$(VENV)/bin/torch-model-archiver --force --model-name classifier --version 1.0 \
	  --serialized-file $(MODEL_DIR)/model.pt2 \
	  --handler handlers/classifier_handler.py \
	  --extra-files $(MODEL_DIR)/index_to_name.json,$(MODEL_DIR)/metadata.json,$(STAGE) \
	  --config-file $(MODEL_CONFIG) \
	  --export-path $(MODEL_STORE)
	@echo "wrote $(MAR)"

# ---------------------------------------------------------------- serving
serve: $(MAR)
	$(PY) -m serving.launcher start --config config.properties
	@echo "try: curl -T docs/sample.png localhost:8080/predictions/classifier"

stop: | $(STAMP)
	$(PY) -m serving.launcher stop

# ---------------------------------------------------------------- tests
test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not server"

clean:
	rm -rf build logs $(MAR) .pytest_cache
