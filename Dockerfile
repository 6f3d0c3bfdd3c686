# dnsgap container image.
#
#   docker build -t dnsgap .
#   docker run -d -p 18553:18553 -v "$PWD/dnsgap.yml:/etc/dnsgap/dnsgap.yml:ro" dnsgap
#   docker run --rm -p 18553:18553 dnsgap dnsgap demo --listen 0.0.0.0:18553
#
# The default command listens on 0.0.0.0:18553 whatever http.listen says in
# the config: inside a container loopback is unreachable from the host. Pass
# your own command to change that (it replaces CMD; there is no ENTRYPOINT).
# The HEALTHCHECK asks port 18553: keep that port when you change the command,
# or pass --health-cmd / --no-healthcheck to docker run.

# Build stage: wheels for dnsgap and its dependencies, so the runtime image
# carries no build tooling and no source tree.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# --no-index: only the wheels built above, exactly as the build resolved them.
RUN pip install --no-index /wheels/*.whl \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 dnsgap \
    && useradd --system --uid 10001 --gid dnsgap --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin dnsgap \
    && mkdir -p /etc/dnsgap
# Mount the configuration read-only here (a file or the whole directory).
WORKDIR /etc/dnsgap
USER 10001:10001
EXPOSE 18553
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:18553/-/healthy', timeout=4)"]
CMD ["dnsgap", "serve", "--config", "/etc/dnsgap/dnsgap.yml", "--listen", "0.0.0.0:18553"]
