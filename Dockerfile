# syntax=docker/dockerfile:1
#
# One image for every Descent role: API (`descent serve`, the default CMD), worker
# (`descent worker`), migrations (`alembic upgrade head`) and Flower. Only the torch build differs:
#
#   docker build -t descent:cpu .                                # CPU wheel (API, CPU workers)
#   docker build -t descent:cu128 --build-arg TORCH_VARIANT=cu128 .   # CUDA 12.8 (GPU workers)
#
# TORCH_VARIANT names a PyTorch wheel index: cpu, cu126, cu128, ... (https://download.pytorch.org/whl/)
# Layers go from least to most often changed, so editing source code reuses the torch and
# dependency layers; the pip cache is a BuildKit cache mount, so it never lands in the image.

FROM python:3.11-slim

ARG TORCH_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Unprivileged runtime user; /data (DESCENT_DATA_DIR: checkpoints, datasets, embedded DB) is its
# own, and a named volume mounted there starts out with that ownership.
RUN groupadd --system --gid 10001 descent \
 && useradd --system --uid 10001 --gid descent --home-dir /home/descent --create-home descent \
 && mkdir -p /data \
 && chown descent:descent /data

WORKDIR /app

# 1. torch alone, first: by far the biggest and slowest layer, and it depends only on the build
#    arg. Same version as the Makefile and pyproject's `train` extra. Only the PyTorch index is
#    used, so pip cannot pick PyPI's (CUDA) wheel for a CPU build; that index also serves
#    torch's own dependencies.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.13.0 \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

# 2. The project's dependencies, read from pyproject.toml alone, so this layer is rebuilt only
#    when the dependency list changes, not on every source edit. Flower (the Celery dashboard
#    service) is an image-only extra, not a project dependency.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "flower>=2.0" \
 && rm /tmp/requirements.txt

# 3. The source, then the package itself without re-resolving dependencies (torch stays the
#    build from step 1). Editable on purpose: models/migrate.py finds alembic.ini and alembic/
#    next to the package (/app), which a regular wheel install into site-packages would lose,
#    and `descent serve` runs migrations through it.
COPY alembic.ini ./
COPY alembic ./alembic
COPY models ./models
COPY api ./api
COPY worker ./worker
COPY client ./client
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps -e . \
 && python -m compileall -q api worker models client alembic

USER descent

ENV DESCENT_HOST=0.0.0.0 \
    PORT=8000 \
    DESCENT_DATA_DIR=/data

EXPOSE 8000

# Liveness only (/healthz): readiness of DB and broker is /readyz, which compose expresses with
# depends_on instead. Roles that serve no HTTP on $PORT (worker, migrate, flower) override or
# disable this in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)" || exit 1

CMD ["descent", "serve"]
