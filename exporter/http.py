"""HTTP endpoints: /metrics, /probe, /-/healthy, /-/ready, /-/reload and the status page."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from exporter.admission import (
    MIN_PROBE_SECONDS,
    REFUSAL_STATUS,
    REFUSAL_TEXT,
    Limits,
    ProbeAdmission,
    scrape_budget,
)
from exporter.capacity import DescriptorsExhausted
from exporter.config import DEFAULT_PORTS, Config, ProbeSpec, Target, TlsSettings
from exporter.probeanswer import ProbeAnswers
from exporter.runtime import Exporter
from exporter.statuspage import render_status_page

log = logging.getLogger(__name__)

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
EXPORTER_KEY: web.AppKey[Exporter] = web.AppKey("exporter", Exporter)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProbeRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_host_port(text: str, default_port: int = 53) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


async def resolve_allowed(host: str, cidrs: tuple[str, ...]) -> str:
    """The address to probe for an ad-hoc host, only if every address it resolves to is
    inside the allowlist. We then probe that address, never the name again, so a name
    that changes its answer between check and use cannot steer traffic elsewhere."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError, ValueError) as exc:
        # UnicodeError: the idna codec refuses empty or over-long labels ("a..b");
        # ValueError: an embedded NUL. Both are bad input, not a server fault.
        raise ProbeRequestError(400, f"cannot resolve {host!r}: {exc}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise ProbeRequestError(400, f"{host!r} resolves to no address")
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not any(ip in network for network in networks):
            raise ProbeRequestError(403, f"{host!r} resolves to {address}, outside the "
                                    "ad-hoc allowlist (http.probe.adhoc_cidrs)")  # fmt: skip
    return addresses[0]


class TargetIndex:
    """The configured targets by name, made again when the config changes: a scan
    for a /probe's target cost more than the probe itself at 10,000 targets (0.46 ms
    for one in the middle; a UDP /probe is about 0.4 CPU-ms)."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._by_name: dict[str, Target] = {}

    def get(self, config: Config, name: str) -> Target | None:
        if config is not self._config:
            self._by_name = {}
            for target in config.targets:
                self._by_name.setdefault(target.name, target)  # the first, as a scan found
            self._config = config
        return self._by_name.get(name)


async def select_probe(config: Config, targets: TargetIndex, target_param: str,
                       probe_param: str) -> tuple[Target, ProbeSpec]:  # fmt: skip
    if not target_param or not probe_param:
        raise ProbeRequestError(400, "both 'target' and 'probe' parameters are required")
    target = targets.get(config, target_param)
    if target is not None:
        for spec in target.probes:
            if spec.name == probe_param:
                return target, spec
        known = ", ".join(spec.name for spec in target.probes)
        raise ProbeRequestError(400, f"target {target_param!r} has no probe "
                                f"{probe_param!r} (known: {known})")  # fmt: skip
    settings = config.http.probe
    if not settings.allow_adhoc:
        raise ProbeRequestError(400, f"unknown target {target_param!r}: only configured "
                                "targets are allowed (http.probe.allow_adhoc is off)")  # fmt: skip
    template = config.probes.get(probe_param)
    if template is None:
        known = ", ".join(sorted(config.probes))
        raise ProbeRequestError(400, f"unknown probe template {probe_param!r} "
                                f"(known: {known})")  # fmt: skip
    try:
        host, port = split_host_port(target_param, DEFAULT_PORTS[template.transport])
    except ValueError as exc:
        raise ProbeRequestError(400, str(exc)) from None
    address = await resolve_allowed(host, settings.adhoc_cidrs)
    # DoT/DoH/DoQ verify the certificate for the name asked for, not the address.
    tls = TlsSettings(server_name=host if host != address else None)
    target = Target(name=target_param, host=address, port=port, probes=(template,), tls=tls)
    return target, template


ADMISSION_KEY: web.AppKey[ProbeAdmission] = web.AppKey("admission", ProbeAdmission)
ANSWERS_KEY: web.AppKey[ProbeAnswers] = web.AppKey("answers", ProbeAnswers)
TARGETS_KEY: web.AppKey[TargetIndex] = web.AppKey("targets", TargetIndex)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    exporter = request.app[EXPORTER_KEY]
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_METRICS})
    await response.prepare(request)
    for chunk in exporter.state.render_chunks():
        await response.write(chunk.encode())
        # Yield to the loop between pieces: a fleet-sized scrape must not hold back
        # the probes that fall due while it renders.
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def probe_handler(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER_KEY]
    admission = request.app[ADMISSION_KEY]
    config = exporter.config
    settings = config.http.probe
    try:
        target, spec = await select_probe(config, request.app[TARGETS_KEY],
                                          request.query.get("target", ""),
                                          request.query.get("probe", ""))  # fmt: skip
    except ProbeRequestError as exc:
        return web.Response(status=exc.status, text=f"{exc}\n")
    client = request.remote or "unknown"
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Prometheus says how long it waits for this scrape; other clients get the
    # probe's own timeout to wait for a slot, then the full probe.
    budget = scrape_budget(request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
    limits = Limits(settings.max_concurrency, settings.max_per_client, settings.max_queued,
                    settings.max_queued_per_client)  # fmt: skip
    refusal = await admission.acquire(client, limits, spec.timeout if budget is None else budget)
    if refusal is not None:
        return web.Response(status=REFUSAL_STATUS[refusal],
                            text=REFUSAL_TEXT[refusal].format(client=client) + "\n")
    run = spec
    try:
        if budget is not None:
            # Answer before Prometheus gives up: a probe that waited for its slot
            # gets what is left of the scrape's deadline. Only then a spec of its
            # own: request templates and /probe plans are cached per spec.
            left = max(MIN_PROBE_SECONDS, budget - (loop.time() - started))
            if left < spec.timeout:
                run = dataclasses.replace(spec, timeout=left)
        result = await exporter.run_probe(target, run)
    except DescriptorsExhausted:
        # The exporter's state, not the server's: no metrics that would blame it.
        return web.Response(status=503, text="dnsgap is out of file descriptors\n")
    finally:
        admission.release(client)
    answer = request.app[ANSWERS_KEY].answer(config, target, spec, result)
    return web.Response(body=answer.encode(),
                        headers={"Content-Type": CONTENT_TYPE_METRICS})  # fmt: skip


async def healthy_handler(_: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def ready_handler(request: web.Request) -> web.Response:
    if request.app[EXPORTER_KEY].ready:
        return web.Response(text="Ready\n")
    return web.Response(status=503, text="Not ready\n")


async def reload_handler(request: web.Request) -> web.Response:
    result = await request.app[EXPORTER_KEY].reload()
    if result.ok:
        return web.Response(text=result.message.capitalize() + "\n")
    return web.Response(status=500, text=f"reload failed, last good config kept: "
                        f"{result.message}\n")  # fmt: skip


async def status_handler(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER_KEY]
    page = render_status_page(exporter.state.pairs.values(),
                              reload_ok=exporter.last_reload_error is None,
                              reload_error=exporter.last_reload_error)  # fmt: skip
    return web.Response(text=page, content_type="text/html")


def build_app(exporter: Exporter,
              middlewares: tuple[Callable[..., Awaitable[web.StreamResponse]], ...] = ()
              ) -> web.Application:  # fmt: skip
    app = web.Application(middlewares=list(middlewares))
    app[EXPORTER_KEY] = exporter
    app[ADMISSION_KEY] = ProbeAdmission(exporter.state)
    app[ANSWERS_KEY] = ProbeAnswers()
    app[TARGETS_KEY] = TargetIndex()
    app.router.add_get("/", status_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/probe", probe_handler)
    app.router.add_get("/-/healthy", healthy_handler)
    app.router.add_get("/-/ready", ready_handler)
    app.router.add_post("/-/reload", reload_handler)
    app.router.add_put("/-/reload", reload_handler)
    return app
