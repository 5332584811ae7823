# The regional inference node: `ebmops node --region R` on a slim CPU base, as a non-root user.
# Built by .github/workflows/images.yml from the repository root:
#   docker build -f deploy/docker/node.Dockerfile -t REGISTRY/ebmops-node:TAG .
# The root filesystem can be read-only (the Kubernetes manifests make it so): everything the
# node writes (installed bundles, the blob cache) goes under EBMOPS_HOME, a mounted volume.
FROM python:3.11-slim-bookworm AS build

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# the CPU build of torch first: the default index would pull a multi-GB CUDA build
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml constraints.txt README.md ./
COPY ebmops ./ebmops
COPY serving ./serving
COPY registry ./registry
COPY drift ./drift
COPY canary ./canary
COPY training ./training
COPY gates ./gates
COPY flows ./flows
RUN pip install --no-cache-dir -c constraints.txt .

FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    EBMOPS_HOME=/var/lib/ebmops EBMOPS_SERVING__HOST=0.0.0.0 EBMOPS_SERVING__LOG_FORMAT=json
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 ebmops \
    && useradd --system --uid 10001 --gid ebmops --home-dir /var/lib/ebmops --create-home ebmops
USER 10001:10001
WORKDIR /var/lib/ebmops
EXPOSE 8101
# /healthz answers without a token (serving.auth.public_probes); python, since the slim base has no curl
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('EBMOPS_NODE_PORT', '8101') + '/healthz', timeout=2)"]
ENTRYPOINT ["ebmops", "node"]
CMD ["--region", "us-east", "--port", "8101"]
