"""/probe abuse and config safety, against a real exporter HTTP server on 127.0.0.1:
configured targets only by default, ad-hoc targets only inside the allowlist (by
address, never by name), validated parameters, concurrency caps; reloads that fail
keep the last good config, reloads that succeed keep unchanged series."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exporter.capacity import DescriptorsExhausted
from exporter.config import ConfigError, load_config
from exporter.http import build_app
from exporter.refserver import RunningServer, ServerBehaviour
from exporter.refserver import start as start_refserver
from exporter.runtime import Exporter
from tests.conftest import free_port
from tests.hostile import BackgroundLoop, HostileServer, Mode
from tests.support import stop_process

ZONE = "demo.example."
SCRAPE_TIMEOUT = "X-Prometheus-Scrape-Timeout-Seconds"


def config_text(port: int, *, allow_adhoc: bool = False, cidrs: str = "[127.0.0.0/8]",
                max_concurrency: int = 16, max_per_client: int = 4, max_queued: int = 64,
                max_queued_per_client: int = 16, extra_probes: str = "",
                slow_port: int | None = None) -> str:  # fmt: skip
    slow = "" if slow_port is None else f"""
  - name: slow
    server: "127.0.0.1:{slow_port}"
    zone: {ZONE}
    probes: [{{name: silent, kind: query, qname: "@", timeout: 1500ms, interval: 1h}}]"""
    return f"""
http:
  probe:
    allow_adhoc: {str(allow_adhoc).lower()}
    adhoc_cidrs: {cidrs}
    max_concurrency: {max_concurrency}
    max_per_client: {max_per_client}
    max_queued: {max_queued}
    max_queued_per_client: {max_queued_per_client}
scheduler: {{jitter: 0}}
probes:
  soa: {{kind: query, qname: "@", qtype: SOA, timeout: 1s, interval: 1s}}
targets:
  - name: ref
    server: "127.0.0.1:{port}"
    zone: {ZONE}
    probes: [soa, {{name: soa_tcp, use: soa, transport: tcp}}{extra_probes}]
  - name: other
    server: "127.0.0.1:{port}"
    zone: {ZONE}
    probes: [soa]{slow}
"""


class Served:
    def __init__(self, exporter: Exporter, base: str, dns: RunningServer) -> None:
        self.exporter, self.base, self.dns = exporter, base, dns

    async def get(self, path: str, params: dict[str, str] | None = None,
                  local: str = "127.0.0.1",
                  headers: dict[str, str] | None = None) -> tuple[int, str]:  # fmt: skip
        connector = aiohttp.TCPConnector(local_addr=(local, 0))
        async with aiohttp.ClientSession(connector=connector) as session, session.get(
            self.base + path, params=params, headers=headers
        ) as response:
            return response.status, await response.text()


@contextlib.asynccontextmanager
async def served(tmp_path: Path, *, schedule: bool = False, hostile: HostileServer | None = None,
                 **options: object) -> AsyncIterator[Served]:  # fmt: skip
    dns = await start_refserver(ServerBehaviour())
    path = tmp_path / "dnsgap.yml"
    slow_port = hostile.port if hostile is not None else None
    path.write_text(config_text(dns.port, slow_port=slow_port, **options))  # type: ignore[arg-type]
    exporter = Exporter(load_config(str(path)), str(path))
    runner = web.AppRunner(build_app(exporter), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if schedule:
        exporter.start()
    try:
        yield Served(exporter, f"http://127.0.0.1:{port}", dns)
    finally:
        await exporter.stop()
        await runner.cleanup()
        await dns.close()


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


# -- configured targets, ad-hoc targets and the allowlist ---------------------------------


def test_unknown_target_is_refused_with_400_when_adhoc_is_off(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as s:
            status, text = await s.get("/probe", {"target": f"127.0.0.1:{s.dns.port}",
                                                  "probe": "soa"})  # fmt: skip
            assert status == 400
            assert "only configured targets are allowed" in text
            assert s.dns.stats.messages_received == 0

    run(main())


def test_configured_target_and_probe_answer_200_with_only_that_probes_metrics(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as s:
            status, text = await s.get("/probe", {"target": "ref", "probe": "soa_tcp"})
            assert status == 200, text
            samples = [line for line in text.splitlines() if line and not line.startswith("#")]
            assert samples
            for line in samples:
                assert 'target="ref"' in line, line
                assert 'probe="soa_tcp"' in line, line
            assert 'cause="none"' in text
            for name in ("dnsgap_build_info", "dnsgap_config_reload", "dnsgap_scheduler",
                         "dnsgap_probes_in_flight"):  # fmt: skip
                assert name not in text
            assert s.dns.stats.tcp_messages == 1

    run(main())


def test_a_probe_that_finds_no_file_descriptor_gets_503_not_metrics_blaming_the_server(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as s:
            async def out_of_descriptors(*_: object) -> None:
                raise DescriptorsExhausted("[Errno 24] Too many open files")

            s.exporter.run_probe = out_of_descriptors  # type: ignore[method-assign,assignment]
            status, text = await s.get("/probe", {"target": "ref", "probe": "soa_tcp"})
            assert status == 503
            assert "out of file descriptors" in text

    run(main())


@pytest.mark.parametrize(("params", "message"), [
    ({}, "both 'target' and 'probe' parameters are required"),
    ({"target": "ref"}, "both 'target' and 'probe'"),
    ({"probe": "soa"}, "both 'target' and 'probe'"),
    ({"target": "ref", "probe": "nope"}, "has no probe 'nope'"),
    ({"target": "ref", "probe": "soa\n# HELP injected"}, "has no probe"),
    ({"target": "ref", "probe": "../../etc/passwd"}, "has no probe"),
    ({"target": "127.0.0.1:53", "probe": "nope"}, "unknown probe template 'nope'"),
    ({"target": "127.0.0.1:99999", "probe": "soa"}, "port out of range"),
    ({"target": "127.0.0.1:0", "probe": "soa"}, "port out of range"),
    ({"target": "127.0.0.1:abc", "probe": "soa"}, "invalid literal"),
    ({"target": ":53", "probe": "soa"}, "no host"),
    ({"target": "[]:53", "probe": "soa"}, "no host"),
    ({"target": "no-such-host.invalid", "probe": "soa"}, "cannot resolve"),
    ({"target": "a..b", "probe": "soa"}, "cannot resolve"),
    ({"target": "x" * 300, "probe": "soa"}, "cannot resolve"),
    ({"target": "a\x00b", "probe": "soa"}, "cannot resolve"),
])  # fmt: skip
def test_bad_probe_parameters_get_a_clear_400(
    tmp_path: Path, params: dict[str, str], message: str
) -> None:
    async def main() -> None:
        async with served(tmp_path, allow_adhoc=True) as s:
            status, text = await s.get("/probe", params)
            assert status == 400, text
            assert message in text
            assert s.dns.stats.messages_received == 0

    run(main())


def test_adhoc_target_inside_the_allowlist_is_probed(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, allow_adhoc=True) as s:
            status, text = await s.get("/probe", {"target": f"127.0.0.1:{s.dns.port}",
                                                  "probe": "soa"})  # fmt: skip
            assert status == 200, text
            assert s.dns.stats.udp_messages == 1
            # A name that resolves inside the allowlist is probed at that address.
            status, text = await s.get("/probe", {"target": f"localhost:{s.dns.port}",
                                                  "probe": "soa"})  # fmt: skip
            assert status == 200, text
            assert s.dns.stats.udp_messages == 2

    run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.1"])
def test_adhoc_target_outside_the_allowlist_gets_403_and_no_packet_is_sent(
    tmp_path: Path, host: str
) -> None:
    async def main() -> None:
        async with served(tmp_path, allow_adhoc=True, cidrs="[10.0.0.0/8]") as s:
            status, text = await s.get("/probe", {"target": f"{host}:{s.dns.port}",
                                                  "probe": "soa"})  # fmt: skip
            assert status == 403, text
            assert "outside the ad-hoc allowlist" in text
            await asyncio.sleep(0.2)
            assert s.dns.stats.messages_received == 0
            assert s.dns.stats.connections == 0

    run(main())


def test_adhoc_with_an_empty_allowlist_allows_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, allow_adhoc=True, cidrs="[]") as s:
            status, _ = await s.get("/probe", {"target": f"127.0.0.1:{s.dns.port}",
                                               "probe": "soa"})  # fmt: skip
            assert status == 403
            assert s.dns.stats.messages_received == 0

    run(main())


# -- concurrency caps ----------------------------------------------------------------------


def test_request_over_the_per_client_cap_waits_for_a_slot_and_is_answered(
    tmp_path: Path,
) -> None:
    """A scrape that finds its client's slots busy is answered late, never refused:
    Prometheus would record a refusal as a failed scrape."""
    async def main() -> None:
        async with await HostileServer.start(Mode.ACCEPT_NO_READ) as silent, served(
            tmp_path, hostile=silent, max_per_client=1, max_concurrency=8
        ) as s:
            first = asyncio.create_task(s.get("/probe", {"target": "slow", "probe": "silent"}))
            await asyncio.sleep(0.3)  # the first one is now waiting for silence
            started = time.monotonic()
            # As Prometheus sends it: this scrape may wait up to 5 s for its answer
            # (without the header a request waits up to its probe's timeout, 1 s).
            second = asyncio.create_task(s.get("/probe", {"target": "ref", "probe": "soa"},
                                               headers={SCRAPE_TIMEOUT: "5"}))
            other_client = await s.get("/probe", {"target": "ref", "probe": "soa"},
                                       local="127.0.0.2")  # fmt: skip
            assert other_client[0] == 200, other_client
            assert not second.done()  # still waiting behind its own client's probe
            status, text = await second
            assert status == 200, text
            assert 'cause="none"' in text
            assert time.monotonic() - started > 1.0  # it ran after the silent probe
            assert (await first)[0] == 200
            _, metrics = await s.get("/metrics")
            assert _metric(metrics, "dnsgap_probe_requests_queued_total") == 1
            assert _metric(metrics, "dnsgap_probe_requests_waiting") == 0
            refused = 'dnsgap_probe_requests_refused_total{reason="%s"}'
            for reason in ("client_queue_full", "queue_full", "deadline"):
                assert _metric(metrics, refused % reason) == 0

    run(main())


def test_request_that_gets_no_slot_before_its_scrape_deadline_gets_503(tmp_path: Path) -> None:
    async def main() -> None:
        async with await HostileServer.start(Mode.ACCEPT_NO_READ) as silent, served(
            tmp_path, hostile=silent, max_per_client=4, max_concurrency=1
        ) as s, aiohttp.ClientSession() as session:
            params = {"target": "slow", "probe": "silent"}
            running = asyncio.create_task(s.get("/probe", params, local="127.0.0.2"))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            # 1 s scrape timeout: 0.5 s to wait (the margin answers before Prometheus
            # gives up), and the silent probe holds the only slot for 1.5 s.
            async with session.get(s.base + "/probe", params={"target": "ref", "probe": "soa"},
                                   headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"}
                                   ) as response:  # fmt: skip
                assert response.status == 503
                assert "before the scrape deadline" in await response.text()
            assert 0.4 < time.monotonic() - started < 0.9
            assert (await running)[0] == 200
            # The slot is free again: the next request runs at once.
            assert (await s.get("/probe", {"target": "ref", "probe": "soa"}))[0] == 200
            _, metrics = await s.get("/metrics")
            assert _metric(metrics, 'dnsgap_probe_requests_refused_total{reason="deadline"}') == 1
            assert s.dns.stats.messages_received == 1

    run(main())


def test_a_client_far_above_any_scrape_pattern_gets_429_and_others_still_wait(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with await HostileServer.start(Mode.ACCEPT_NO_READ) as silent, served(
            tmp_path, hostile=silent, max_per_client=1, max_concurrency=2,
            max_queued=2, max_queued_per_client=1,
        ) as s:  # fmt: skip
            params = {"target": "slow", "probe": "silent"}

            def scrape(local: str) -> asyncio.Task[tuple[int, str]]:
                return asyncio.create_task(s.get("/probe", params, local=local,
                                                 headers={SCRAPE_TIMEOUT: "10"}))  # fmt: skip

            running = scrape("127.0.0.1")
            await asyncio.sleep(0.3)
            waiting = scrape("127.0.0.1")
            await asyncio.sleep(0.2)
            # One running and one waiting is all this client may have outstanding.
            status, text = await s.get("/probe", params)
            assert status == 429
            assert text.strip() == "too many /probe requests waiting from 127.0.0.1"
            # Another client: one running and one waiting fill both slots and the queue.
            others = [scrape("127.0.0.2") for _ in range(2)]
            await asyncio.sleep(0.2)
            status, text = await s.get("/probe", params, local="127.0.0.3")
            assert status == 429
            assert text.strip() == "too many /probe requests waiting"
            results = await asyncio.gather(running, waiting, *others)
            assert [r[0] for r in results] == [200] * 4
            _, metrics = await s.get("/metrics")
            refused = 'dnsgap_probe_requests_refused_total{reason="%s"}'
            assert _metric(metrics, refused % "client_queue_full") == 1
            assert _metric(metrics, refused % "queue_full") == 1
            assert _metric(metrics, "dnsgap_probe_requests_queued_total") == 2

    run(main())


def test_scrape_timeout_header_shortens_the_probe_and_bad_values_are_ignored(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with await HostileServer.start(Mode.ACCEPT_NO_READ) as silent, served(
            tmp_path, hostile=silent
        ) as s, aiohttp.ClientSession() as session:
            for header in ("1.0", "nan", "-5", "banana", "inf"):
                started = time.monotonic()
                async with session.get(
                    s.base + "/probe", params={"target": "slow", "probe": "silent"},
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": header},
                ) as response:  # fmt: skip
                    assert response.status == 200, header
                    assert 'cause="no_response"' in await response.text()
                assert time.monotonic() - started < 1.5 + 1.0, header

    run(main())


# -- config safety ---------------------------------------------------------------------


def test_rejected_config_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    text = config_text(53).replace("interval: 1s}", "interval: banana}")
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    error = caught.value
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "banana" in row)
    assert error.path == str(path)
    assert error.line == line
    assert "interval" in error.key
    assert str(error).startswith(f"{path}:{line}: ")


def _metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


def test_failed_reload_keeps_the_old_config_running_and_says_so(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, schedule=True) as s:
            await asyncio.sleep(1.2)
            path = Path(s.exporter.config_path or "")
            path.write_text("targets: [{name: broken, server: 127.0.0.1, probes: [nope]}]\n")
            result = await s.exporter.reload()
            assert not result.ok
            assert str(path) in result.message
            status, _ = await s.get("/-/reload")
            assert status == 405  # GET does not reload
            async with aiohttp.ClientSession() as session, session.post(
                s.base + "/-/reload") as response:  # fmt: skip
                assert response.status == 500
                assert "last good config kept" in await response.text()
            runs_before = s.exporter.state.pairs[("ref", "soa")].responses.get(("NOERROR", "none"))
            await asyncio.sleep(2.2)
            _, text = await s.get("/metrics")
            assert _metric(text, "dnsgap_config_reload_success") == 0
            assert _metric(text, 'dnsgap_config_reloads_total{result="failure"}') == 2
            assert _metric(text, 'dnsgap_config_reloads_total{result="success"}') == 1
            after = _metric(text, 'dnsgap_probe_responses_total{target="ref",probe="soa",'
                            'rcode="NOERROR",cause="none"}')  # fmt: skip
            assert after >= (runs_before or 0) + 1  # the old probes still run
            assert 'target="broken"' not in text
            _, page = await s.get("/")
            assert "reload FAILED" in page

    run(main())


def test_successful_reload_keeps_counters_of_unchanged_pairs_and_drops_deleted_series(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path, schedule=True) as s:
            await asyncio.sleep(2.3)
            _, before = await s.get("/metrics")
            kept = ('dnsgap_probe_responses_total{target="ref",probe="soa",'
                    'rcode="NOERROR",cause="none"}')
            count_before = _metric(before, kept)
            assert count_before >= 2
            assert 'target="other"' in before
            assert (await s.get("/probe", {"target": "other", "probe": "soa"}))[0] == 200
            path = Path(s.exporter.config_path or "")
            text = path.read_text()
            path.write_text(text[: text.index("  - name: other")])
            async with aiohttp.ClientSession() as session, session.post(
                s.base + "/-/reload") as response:  # fmt: skip
                assert response.status == 200, await response.text()
            # /probe knows the targets of the config now running, not of the first.
            status, body = await s.get("/probe", {"target": "other", "probe": "soa"})
            assert status == 400
            assert "unknown target 'other'" in body
            _, after = await s.get("/metrics")
            assert _metric(after, kept) >= count_before
            assert 'target="other"' not in after
            assert _metric(after, "dnsgap_config_reload_success") == 1
            assert _metric(after, 'dnsgap_config_reloads_total{result="success"}') == 2

    run(main())


# -- the same through a real process: SIGHUP and POST /-/reload ------------------------------


@contextlib.contextmanager
def exporter_process(config: Path, port: int,
                     *global_options: str) -> Iterator[subprocess.Popen[bytes]]:
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", *global_options, "serve", "--config",
             str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", process)
        yield process
    finally:
        stop_process(process)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exporter exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_exporter_process_survives_a_broken_config_on_sighup_and_post_reload(
    tmp_path: Path,
) -> None:
    background = BackgroundLoop()
    try:
        dns = background.run(start_refserver(ServerBehaviour()))
        path = tmp_path / "dnsgap.yml"
        path.write_text(config_text(dns.port))
        port = free_port()
        with exporter_process(path, port) as process:
            base = f"http://127.0.0.1:{port}"
            time.sleep(1.5)
            assert 'target="ref",probe="soa"' in http_get(base + "/metrics")
            path.write_text("targets: [{{{ not yaml\n")
            process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            request = urllib.request.Request(base + "/-/reload", method="POST")
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=5)
            assert caught.value.code == 500
            seen = dns.stats.udp_messages
            time.sleep(1.5)
            metrics = http_get(base + "/metrics")
            assert process.poll() is None
            assert 'target="ref",probe="soa"' in metrics
            assert _metric(metrics, "dnsgap_config_reload_success") == 0
            assert _metric(metrics, 'dnsgap_config_reloads_total{result="failure"}') == 2
            assert dns.stats.udp_messages > seen  # still probing with the old config
        log = path.with_suffix(".log").read_text()
        assert "keeping the last good config" in log
        # Each failed reload (one SIGHUP, one POST) is logged once, not once per layer.
        assert log.count("expected valid YAML") == 2, log
        background.run(dns.close())
    finally:
        background.close()
    assert not os.path.exists(tmp_path / "never")
