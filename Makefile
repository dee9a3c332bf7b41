# Every target the README names. Each depends on `install`, so a fresh clone needs no manual step.
.PHONY: install train archive serve stop test test-fast clean help loadtest bench

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
MODEL_DIR ?= build/model
MODEL_STORE ?= model_store
MODEL_CONFIG ?= model-config.yaml
MAR       := $(MODEL_STORE)/classifier.mar
STAGE     ?= build/mar-extra
TRAIN_ARGS ?=

help:
	@echo "make serve   install, train the default model if none exists, archive, start TorchServe, wait until READY"
	@echo "make test    install and run the whole test suite"
	@echo "make train   (re)train: TRAIN_ARGS='--data DIR --epochs N ...'"
	@echo "make archive / make stop / make clean"
	@echo "make loadtest  locust against the running make serve (HOST=, USERS=, SPAWN_RATE=, RUN_TIME=)"
	@echo "make bench     raw model vs our endpoint vs stock TorchServe; writes docs/benchmarks.*"

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
	$(PY) -m training.train --output-dir $(MODEL_DIR) $(TRAIN_ARGS)

train: $(STAMP)
	$(PY) -m training.train --output-dir $(MODEL_DIR) $(TRAIN_ARGS)

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

# ---------------------------------------------------------------- load tests and benchmarks
HOST       ?= http://127.0.0.1:8080
USERS      ?= 16
SPAWN_RATE ?= 4
RUN_TIME   ?= 60s
IMAGES     ?= build/loadtest_images
BENCH_ARGS ?=

$(IMAGES): | $(STAMP)
	$(PY) -m loadtests.images $(IMAGES)

# Against the server `make serve` started; CSV and HTML reports go to reports/ (git-ignored).
loadtest: | $(STAMP) $(IMAGES)
	@mkdir -p reports
	$(PY) -m locust -f loadtests/locustfile.py --headless --only-summary --host $(HOST) \
	  -u $(USERS) -r $(SPAWN_RATE) -t $(RUN_TIME) --image-dir $(IMAGES) \
	  --csv reports/loadtest --html reports/loadtest.html

bench: $(MAR) | $(STAMP)
	$(PY) -m loadtests.bench $(BENCH_ARGS)

# ---------------------------------------------------------------- tests
test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not server"

clean:
	rm -rf build logs $(MAR) .pytest_cache
