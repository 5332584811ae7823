# The trainer for the `gpu` work pool (deploy/k8s/gpu-job-template.json): a CUDA base, the CUDA
# build of torch, this checkout at /opt/ebmops (the `pull` step of `train-gpu` in prefect.yaml).
#   docker build -f deploy/docker/trainer.Dockerfile -t REGISTRY/ebmops-train:cuda .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cu128"
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu 24.04's python3 (3.12); apt versions are not pinned: the CUDA base image is the pin
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_SPEC"
WORKDIR /opt/ebmops
COPY . /opt/ebmops
RUN pip install --no-cache-dir -c constraints.txt -e . \
    && groupadd --system --gid 10001 ebmops \
    && useradd --system --uid 10001 --gid ebmops --home-dir /home/ebmops --create-home ebmops
USER 10001:10001
ENV EBMOPS_HOME=/home/ebmops/.ebmops EBMOPS_TRAINING__DEVICE=auto
HEALTHCHECK NONE
CMD ["ebmops", "--help"]
