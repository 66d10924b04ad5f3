# runtap sidecar image.
#   docker build -t runtap:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9464:9464 -v runtap-data:/data runtap:0.1.0 serve --upstream https://api.openai.com
# (arguments replace CMD, so they start with the subcommand; every flag also has a RUNTAP_* variable)
# Ports: 8080 = the proxy (point the app's OpenAI base_url at http://HOST:8080/v1),
#        9464 = admin (/healthz, /readyz, /metrics, /reports). Both listen on 0.0.0.0 inside the
#        container (RUNTAP_LISTEN / RUNTAP_ADMIN below): Prometheus scrapes the admin port from outside,
#        so it must not stay on runtap's loopback default. Publish 9464 only to your monitoring network.
ARG PYTHON_VERSION=3.11

# Build stage: wheels for runtap and its pinned runtime dependencies (no test tools).
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY settings ./settings
COPY proxy ./proxy
COPY analytics ./analytics
COPY demo ./demo
COPY dashboards ./dashboards
# Same package, extras and exact pins (constraints.txt) as `bash scripts/setup.sh`: runtap[demo,fast,s3]
# (demo: the simulator and workload docker-compose.yml runs from this image). The dashboards ship as
# package data: `docker run runtap:0.1.0 dashboards export /out` writes them with Grafana provisioning.
RUN python -m pip install --no-cache-dir --disable-pip-version-check --upgrade pip \
 && python -m pip wheel --no-cache-dir --disable-pip-version-check -c constraints.txt --wheel-dir /wheels ".[demo,fast,s3]"

# Runtime stage: the wheels installed into a slim Python, run as an unprivileged user.
FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RUNTAP_LISTEN=0.0.0.0:8080 \
    RUNTAP_ADMIN=0.0.0.0:9464 \
    RUNTAP_DB=/data/runtap.duckdb
RUN groupadd --system --gid 10001 runtap \
 && useradd --system --uid 10001 --gid runtap --home-dir /data --no-create-home --shell /usr/sbin/nologin runtap \
 && mkdir -p /data \
 && chown runtap:runtap /data
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels "runtap[demo,fast,s3]" \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /data
# The DuckDB file (and its spool) live here: mount a volume to keep captured runs across restarts.
VOLUME ["/data"]
EXPOSE 8080 9464
# Liveness of the admin listener; slim images have no curl, so Python's urllib does the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RUNTAP_ADMIN', '127.0.0.1:9464').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# SIGTERM drains in-flight requests and streams (--grace-period, default 30 s), then flushes DuckDB:
# give the container a longer stop timeout than that (docker stop -t 45, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["runtap"]
CMD ["serve"]
