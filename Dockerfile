# itsm-sync: a slim image that runs as a non-root user (docs/operations.md, Deploying).
#   docker build -t itsm-sync .
#   docker run --env-file itsm-sync.env -p 8000:8000 itsm-sync
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config ./config
COPY connectors ./connectors
COPY mapping ./mapping
COPY postmortem_tracker ./postmortem_tracker
COPY service ./service
COPY simulators ./simulators
COPY sync ./sync
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /var/lib/itsm-sync --create-home itsm-sync
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER itsm-sync
WORKDIR /var/lib/itsm-sync
EXPOSE 8000
# Liveness: the container is healthy while the process answers (/healthz). Whether it can do
# its work (database, each system's sign-in, workers, queue age) is /readyz: a readiness probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["itsm-sync"]
CMD ["run", "--host", "0.0.0.0", "--port", "8000"]
