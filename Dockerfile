# The recommendation service of chapter 3.7 (companion.ops.serving) in a container.
#
#   docker build -t retention-companion .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" \
#       -e COMPANION_RELOAD_TOKEN="$(openssl rand -hex 32)" \
#       retention-companion --artifact /models/blend --workers 2
#
# Models are artifact folders written by companion.ops.export.save, mounted read-only at
# /models (the only folder POST /reload may load from). The package is installed with
# the serving stack (the extra "serve": FastAPI, uvicorn, httptools, uvloop); add the
# extra "deep" (".[serve,deep]") to serve Keras models.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    COMPANION_MODELS_DIR=/models

WORKDIR /opt/companion
COPY pyproject.toml README.md ./
COPY companion ./companion
# DL3013 asks for pinned versions: this installs the local package, whose dependencies
# pyproject.toml bounds
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin companion \
    && mkdir /models

# never root at run time; the models folder is mounted read-only over /models
USER 10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# SIGTERM (docker stop) lets uvicorn finish the requests in flight first
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "companion.ops.serving", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--artifact", "/models/blend"]
