# Every target the README names. Each depends on `install`, so a fresh clone needs no manual step.
.PHONY: install lint format stubs train prepare archive serve stop test test-fast soak clean help FORCE image image-gpu run-image loadtest bench \
	install-monitoring monitor drift-stream

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
MODEL_DIR ?= build/model
MODEL_STORE ?= model_store
MODEL_CONFIG ?= model-config.yaml
MAR       := $(MODEL_STORE)/classifier.mar
STAGE     ?= build/mar-extra
TRAIN_ARGS ?=
# Inference backend packed by `make archive` (see classifier/backends.py and docs/optimization.md).
BACKEND   ?= openvino-int8
ONNX_FILES := $(if $(filter eager,$(BACKEND)),,$(MODEL_DIR)/model.onnx $(MODEL_DIR)/model.int8.onnx)
PROTO     := serving/proto/inference.proto
STUBS     := serving/_generated/inference_pb2_grpc.py
DATA      ?=
DATA_ARG  := $(if $(DATA),--data $(DATA))

help:
	@echo "make serve   install, train the default model if none exists, archive, start TorchServe, wait until READY"
	@echo "make test    install and run the whole test suite"
	@echo "make train   (re)train: DATA=DIR, TRAIN_ARGS='--epochs N ...'; metrics and plots go to runs/<timestamp>/"
	@echo "make prepare SRC=DIR DST=DIR   split a folder of class subfolders into DST/train and DST/val"
	@echo "make archive / make stop / make clean"
	@echo "make image / make image-gpu / make run-image [GPU=1]   container images (README: Containers)"
	@echo "make loadtest  locust against the running make serve (HOST=, USERS=, SPAWN_RATE=, RUN_TIME=)"
	@echo "make bench     raw model vs our endpoint vs stock TorchServe; writes docs/benchmarks.*"
	@echo "make monitor   Prometheus with our alert rules against make serve, on 127.0.0.1:$(PROM_PORT) (docs/monitoring.md)"
	@echo "make drift-stream SHIFT=blur   send a shifted image stream to make serve and watch the drift gauges"

# ---------------------------------------------------------------- setup
install: $(STAMP) $(STUBS)

$(STAMP): requirements.txt
	@command -v java >/dev/null 2>&1 || { echo "error: TorchServe needs Java 11 or later, and no 'java' is on PATH. Install a JDK/JRE (e.g. apt-get install openjdk-17-jre-headless)." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 11 ]; then echo "error: TorchServe needs Java 11 or later; found: $$(java -version 2>&1 | head -1)" >&2; exit 1; fi
	@command -v python3.11 >/dev/null 2>&1 && p=python3.11 || p=python3; \
	  test -x $(PY) || $$p -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# gRPC client stubs, generated from our .proto (never edited, never committed). The -I mapping
# makes protoc write them as the package serving._generated, so their imports resolve.
stubs: $(STUBS)

$(STUBS): $(PROTO) | $(STAMP)
	$(PY) -m grpc_tools.protoc -Iserving/_generated=serving/proto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)
	@touch serving/_generated/__init__.py

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

# fp32 ONNX and its int8 (static QDQ) quantization, calibrated on the model's training data.
$(MODEL_DIR)/model.onnx $(MODEL_DIR)/model.int8.onnx &: $(MODEL_DIR)/model.pt2 | $(STAMP)
	$(PY) -m training.export_onnx --model-dir $(MODEL_DIR)

# The handler imports the `handlers` adapter and the `classifier` core, so both are staged as
# folders inside the archive: the .mar is self-contained (tests/integration/test_archive.py).
# The archive always carries model.pt2, so any backend can fall back to eager.
# FORCE: the backend is a make variable, so rebuild whenever archive is asked for.
$(MAR): $(MODEL_DIR)/model.pt2 $(MODEL_DIR)/index_to_name.json $(ONNX_FILES) handlers/*.py classifier/*.py $(MODEL_CONFIG) FORCE | $(STAMP)
	rm -rf $(STAGE) && mkdir -p $(STAGE)/handlers $(STAGE)/classifier $(MODEL_STORE)
	cp handlers/*.py $(STAGE)/handlers/
	cp classifier/*.py $(STAGE)/classifier/
	$(if $(ONNX_FILES),cp $(ONNX_FILES) $(STAGE)/)
	sed 's/^  backend: .*/  backend: $(BACKEND)/' $(MODEL_CONFIG) > $(STAGE)/../model-config.$(BACKEND).yaml
	$(VENV)/bin/torch-model-archiver --force --model-name classifier --version 1.0 \
	  --serialized-file $(MODEL_DIR)/model.pt2 \
	  --handler handlers/classifier_handler.py \
	  --extra-files $(MODEL_DIR)/index_to_name.json,$(MODEL_DIR)/metadata.json,$(STAGE) \
	  --config-file $(STAGE)/../model-config.$(BACKEND).yaml \
	  --export-path $(MODEL_STORE)
	@echo "wrote $(MAR) (backend $(BACKEND))"

FORCE:

# ---------------------------------------------------------------- serving
serve: $(MAR) $(STUBS)
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
# ruff lint and format check (config in pyproject.toml); `make format` rewrites in place.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint $(STAMP) $(STUBS)
	$(PY) -m pytest

test-fast: $(STAMP) $(STUBS)
	$(PY) -m pytest -m "not slow and not server"

# 5 minutes of bounded loopback load against a private server; writes docs/soak.md.
soak: $(MAR)
	$(PY) -m loadtests.soak --duration 300 --clients 4

clean:
	rm -rf build logs $(MAR) .pytest_cache

# ---------------------------------------------------------------- monitoring (docs/monitoring.md)
PROM_PORT ?= 9090
SHIFT     ?= none
COUNT     ?= 600

# promtool and prometheus for the monitoring tests and `make monitor` (Debian/Ubuntu package; needs root).
install-monitoring:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }

# Prometheus in the foreground, loopback only, scraping `make serve` (metrics on 127.0.0.1:8082) with our rules.
monitor:
	@command -v prometheus >/dev/null 2>&1 || { echo "error: prometheus is not installed; run: make install-monitoring (apt-get install -y prometheus)" >&2; exit 1; }
	@mkdir -p build/prometheus
	prometheus --config.file=monitoring/prometheus.yml --web.listen-address=127.0.0.1:$(PROM_PORT) --storage.tsdb.path=build/prometheus

# A stream of generated images to `make serve`: SHIFT=none|invert|blur|noise|photo_like|rings|one_class.
drift-stream: | $(STAMP)
	$(PY) -m loadtests.drift_streams --url $(HOST) --shift $(SHIFT) --count $(COUNT)

# ---------------------------------------------------------------- containers
# One Dockerfile, two targets; the archive is built first because the image copies it.
IMAGE ?= resnet-classifier
PORT  ?= 8080

image: $(MAR)
	docker build --target cpu -t $(IMAGE):cpu .

image-gpu: $(MAR)
	docker build --target gpu -t $(IMAGE):gpu .

# make run-image          the CPU image on localhost:$(PORT)
# make run-image GPU=1    the GPU image with every GPU (needs nvidia-container-toolkit)
run-image:
	docker run --rm -p $(PORT):8080 $(if $(GPU),--gpus all $(IMAGE):gpu,$(IMAGE):cpu)
