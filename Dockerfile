# syntax=docker/dockerfile:1
# Two images of the classifier from one file; `make archive` must have written model_store/classifier.mar:
#   docker build --target cpu -t resnet-classifier:cpu .    (make image)
#   docker build --target gpu -t resnet-classifier:gpu .    (make image-gpu)
# A plain `docker build .` builds the last stage, cpu.
# Versions of torch / torchvision here must equal requirements.txt (tests/unit/test_container_files.py checks).

# ------------------------------------------------------------------ the files both images serve
FROM scratch AS app
# The handler travels inside the archive (handlers/ and the classifier/ core are packed into classifier.mar by `make archive`).
COPY docker/config.properties docker/entrypoint.py monitoring/ts-metrics.yaml /home/model-server/
COPY model_store/classifier.mar /home/model-server/model-store/

# ------------------------------------------------------------------ GPU: CUDA 13.0 (torch 2.14.1's build) + Python 3.11 + JRE 17
# torch 2.14.1 from PyPI depends on cuda-toolkit 13.0.3 and cudnn cu13 wheels, which bring their own
# libraries; the `base` flavour adds only cudart and the driver requirement (CUDA >= 13.0, driver >= 580).
FROM nvidia/cuda:13.0.2-base-ubuntu22.04 AS gpu-base
# Ubuntu 22.04 ships python3.11 in universe. Package versions are not pinned: the archive only updates
# them for security fixes, and a pin would fail the build once the pinned version leaves it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin model-server

FROM gpu-base AS gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY requirements.txt docker/requirements-serve.txt /tmp/requirements/
# The default PyPI wheels: torch 2.14.1 built for CUDA 13.0, with the nvidia-* CUDA and cuDNN wheels.
RUN python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -c /tmp/requirements/requirements.txt -r /tmp/requirements/requirements-serve.txt \
 && rm -rf /tmp/requirements
COPY --from=app /home/model-server /home/model-server
RUN mkdir /home/model-server/logs && chown model-server:model-server /home/model-server/logs
# Numeric, so that runAsNonRoot-style checks can verify it without reading /etc/passwd.
USER 1000:1000
WORKDIR /home/model-server
EXPOSE 8080 8081 8082 7070 7071
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
  CMD ["python", "/home/model-server/entrypoint.py", "healthcheck"]
# tini as PID 1 reaps orphans and passes SIGTERM to the entrypoint, which stops TorchServe gracefully.
ENTRYPOINT ["tini", "--", "python", "/home/model-server/entrypoint.py"]

# ------------------------------------------------------------------ CPU: slim Python 3.11 + JRE 17, CPU-only wheels
FROM python:3.11-slim-bookworm AS cpu-base
# Package versions are not pinned, as in gpu-base: bookworm only updates them for security fixes.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin model-server

FROM cpu-base AS cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY requirements.txt docker/requirements-serve.txt /tmp/requirements/
# The CPU index serves torch 2.14.1+cpu: no CUDA libraries in this image. The second install sets
# numpy / pillow to the project's pins (the CPU index may have brought other versions).
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -c /tmp/requirements/requirements.txt -r /tmp/requirements/requirements-serve.txt \
 && rm -rf /tmp/requirements
COPY --from=app /home/model-server /home/model-server
RUN mkdir /home/model-server/logs && chown model-server:model-server /home/model-server/logs
# Numeric, so that runAsNonRoot-style checks can verify it without reading /etc/passwd.
USER 1000:1000
WORKDIR /home/model-server
EXPOSE 8080 8081 8082 7070 7071
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "/home/model-server/entrypoint.py", "healthcheck"]
# tini as PID 1 reaps orphans and passes SIGTERM to the entrypoint, which stops TorchServe gracefully.
ENTRYPOINT ["tini", "--", "python", "/home/model-server/entrypoint.py"]
