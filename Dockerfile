# syntax=docker/dockerfile:1
# The bbc1k inference server: ONNX Runtime + Starlette, no torch, no fastai.
#   docker build -t bbc1k-app .
#   (--build-arg BASE=... for another Python 3.11 base with python and pip on PATH)
#   docker run -p 5000:5000 -e CLASSIFIER=https://.../bbc-classifier.onnx bbc1k-app
# Models: CLASSIFIER / DETECTOR / SEGMENTER (+ *_SHA256) as a path, https URL or
# Google Drive link. Exported .onnx files found in models/ at build time are
# copied in and fill the roles not set (MODELS_DIR).
# BASE: the image to build on; CI passes a local Debian base, since no registry is reachable there.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=5000 \
    MODELS_DIR=/srv/models \
    MODEL_CACHE=/tmp/bbc1k/models

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app

WORKDIR /srv
COPY requirements-serve.txt .
RUN pip install --no-cache-dir -r requirements-serve.txt

COPY pyproject.toml README.md ./
COPY bbc1k/ bbc1k/
RUN pip install --no-cache-dir --no-deps . && rm -rf build bbc1k.egg-info

COPY app/ app/
# models/ is optional (it is not in git): copy its .onnx files when the build context has them.
RUN --mount=type=bind,target=/ctx \
    mkdir -p models && find /ctx/models -maxdepth 1 -name '*.onnx' -exec cp {} models/ \; 2>/dev/null; \
    chown -R 10001:10001 models

USER 10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5000'), timeout=4)"]
# -m: the app package is found in the working directory (/srv), not installed
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0"]
