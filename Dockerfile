# kc-meet-sidecar: the web app and scheduler (`kc-sidecar serve`), as an unprivileged user.
# Build:  docker build -t kc-meet-sidecar .
# Config: KCSC_* environment variables (secrets through KCSC_<SECTION>__<KEY>_FILE), see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 kcsc \
    && useradd --system --uid 10001 --gid kcsc --home-dir /var/lib/kc-sidecar --create-home \
       --shell /usr/sbin/nologin kcsc

# Only what the package needs (see .dockerignore); installed, then the sources are dropped.
COPY . /tmp/src
RUN pip install /tmp/src && rm -rf /tmp/src

USER kcsc
WORKDIR /var/lib/kc-sidecar

ENV KCSC_SIDECAR__LISTEN=0.0.0.0:8090 \
    KCSC_SIDECAR__LOG_FORMAT=json
EXPOSE 8090

# No curl in the slim image: ask /healthz with the standard library, on the port we listen on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('KCSC_SIDECAR__LISTEN', ':8090').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["kc-sidecar"]
CMD ["serve"]
