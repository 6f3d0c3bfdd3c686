"""Serving: the HTTP endpoints and the probe schedule of one config, until a
signal stops the process (SIGHUP reloads the config file).

Below the command line: ``dnsgap serve`` and ``dnsgap demo`` both end here, and
nothing here knows about arguments.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from exporter.capacity import raise_descriptor_limit
from exporter.config import Config
from exporter.http import build_app, split_host_port
from exporter.reload import Listener
from exporter.runtime import Exporter
from exporter.sharding import Shard
from exporter.webconfig import load_web_config

log = logging.getLogger("dnsgap")


async def serve(config: Config, config_path: str | None, listen: str, shard: Shard,
                ready_message: str | None = None) -> None:  # fmt: skip
    # Before the scheduler sizes its descriptor budget from the soft limit.
    soft, hard = raise_descriptor_limit()
    log.debug("file descriptor limit: soft %d, hard %d", soft, hard)
    exporter = Exporter(config, config_path, shard)
    # A reload that changes what the listener was started with needs a restart.
    exporter.listener = Listener.of(config, listen_from_config=listen == config.http.listen)
    web_config = load_web_config(config.http.web_config_file)
    app = build_app(exporter, web_config.middlewares)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_host_port(listen, 18553)
    site = web.TCPSite(runner, host, port, ssl_context=web_config.ssl_context)
    await site.start()
    exporter.freeze_gc = True
    exporter.start()
    scheme = "https" if web_config.ssl_context else "http"
    shown = f"[{host}]" if ":" in host else host
    for path in ("/metrics", "/", "/probe?target=&probe="):
        print(f"dnsgap: serving {scheme}://{shown}:{port}{path}", flush=True)
    if ready_message:
        print(ready_message, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        # The reload awaits a worker thread: run it as a task (kept referenced).
        task = loop.create_task(_reload_on_signal(exporter))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await exporter.stop()
        await runner.cleanup()


async def _reload_on_signal(exporter: Exporter) -> None:
    # Exporter.reload logs the outcome (the error with file:line:key, or what was
    # applied); saying it again here logged a failed reload twice.
    result = await exporter.reload()
    log.debug("SIGHUP reload: %s", result.message)
