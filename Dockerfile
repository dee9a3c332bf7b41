# syntax=docker/dockerfile:1
# Two images of the classifier from one file; `make archive` must have written model_store/classifier.mar:
#   docker build -t resnet-classifier:cpu .                          (make image)
#   docker build --build-arg FLAVOUR=gpu -t resnet-classifier:gpu .  (make image-gpu)
# podman: add --format docker, or the HEALTHCHECK is dropped (the make targets do).
# FLAVOUR picks the base and the torch build; everything after that is one shared stage, `image`.
# Every package comes from a lock, installed with --no-deps: an upstream release cannot change the image (tools/locks.py).
# TORCH_REQUIREMENTS names the torch stage's file: docker/torch-cpu.txt (the CPU wheel index, the cpu default) or
# docker/torch-pypi.lock (PyPI's CUDA build, hashed: the gpu default, and the cpu fallback where the CPU index is not
# reachable). PIP_INDEX_URL (a mirror) and PIP_CERT (a proxy's CA bundle, bind-mounted) reach pip as --build-arg.
# Versions of torch / torchvision there equal requirements.txt (tests/unit/test_container_files.py checks).
ARG FLAVOUR=cpu

# ------------------------------------------------------------------ the files both images serve
FROM scratch AS app
# The handler travels inside the archive (handlers/ and the classifier/ core are packed into classifier.mar by `make archive`).
# The entrypoint imports serving/launcher.py and serving/drain.py (stdlib only), all of the serving package it needs.
COPY docker/config.properties docker/entrypoint.py monitoring/ts-metrics.yaml /home/model-server/
COPY serving/__init__.py serving/launcher.py serving/drain.py /home/model-server/serving/
COPY model_store/classifier.mar /home/model-server/model-store/

# ------------------------------------------------------------------ GPU: CUDA 13.0 (torch 2.14.1's build) + Python 3.11 + JRE 17
# torch 2.14.1 from PyPI depends on cuda-toolkit 13.0.3 and cudnn cu13 wheels, which bring their own
# libraries; the `base` flavour adds only cudart and the driver requirement (CUDA >= 13.0, driver >= 580).
FROM nvidia/cuda:13.0.2-base-ubuntu22.04 AS gpu-base
# Ubuntu 22.04 ships python3.11 in universe. Package versions are not pinned: the archive only updates
# them for security fixes, and a pin would fail the build once the pinned version leaves it.
# haproxy: the inference ports drain through it on stop (serving/drain.py).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv openjdk-17-jre-headless tini haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin model-server

FROM gpu-base AS gpu-torch
# The default PyPI wheels: torch 2.14.1 built for CUDA 13.0, with the nvidia-* CUDA and cuDNN wheels.
ARG TORCH_REQUIREMENTS=docker/torch-pypi.lock
ARG PIP_INDEX_URL
ARG PIP_CERT
COPY ${TORCH_REQUIREMENTS} /tmp/torch-requirements.txt
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps -r /tmp/torch-requirements.txt

# ------------------------------------------------------------------ CPU: slim Python 3.11 + JRE 17, CPU-only wheels
FROM python:3.11-slim-bookworm AS cpu-base
# Package versions are not pinned, as in gpu-base: bookworm only updates them for security fixes.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
# libjpeg62-turbo: the fallback of the JPEG region decoder (classifier/native), which first runs the libjpeg-turbo
# inside Pillow's wheel (classifier/jpeg_region.py). haproxy: the inference ports drain through it (serving/drain.py).
 && apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless tini libjpeg62-turbo haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin model-server

FROM cpu-base AS cpu-torch
# The CPU index serves torch 2.14.1+cpu: no CUDA libraries in this image.
ARG TORCH_REQUIREMENTS=docker/torch-cpu.txt
ARG PIP_INDEX_URL
ARG PIP_CERT
COPY ${TORCH_REQUIREMENTS} /tmp/torch-requirements.txt
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps -r /tmp/torch-requirements.txt

# ------------------------------------------------------------------ the image: one tail for both flavours
FROM ${FLAVOUR}-torch AS image
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
ARG PIP_INDEX_URL
ARG PIP_CERT
COPY docker/requirements-serve.lock /tmp/requirements-serve.lock
# The lock's hashed pins and nothing else; `pip check` proves that torch's requirements are among them.
RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements-serve.lock \
 && pip check \
 && rm /tmp/requirements-serve.lock /tmp/torch-requirements.txt
COPY --from=app /home/model-server /home/model-server
RUN mkdir /home/model-server/logs && chown model-server:model-server /home/model-server/logs
# Numeric, so that runAsNonRoot-style checks can verify it without reading /etc/passwd.
USER 1000:1000
WORKDIR /home/model-server
EXPOSE 8080 8081 8082 7070 7071
# Readiness, not liveness: healthy only once the model has a READY worker (`entrypoint.py live` is GET /ping).
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
  CMD ["python", "/home/model-server/entrypoint.py", "ready"]
# tini as PID 1 reaps orphans and passes SIGTERM to the entrypoint, which drains, then stops TorchServe.
ENTRYPOINT ["tini", "--", "python", "/home/model-server/entrypoint.py"]
