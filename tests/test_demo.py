"""The README's first command: `dnsgap demo` shows real gap series within 15 seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live_demo import fetch, running_demo, wait_for_metrics


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    with running_demo() as base:
        yield base


def _wait_for(base: str, pattern: str, seconds: float = 15.0) -> str:
    return wait_for_metrics(base, pattern, seconds=seconds)


def test_demo_shows_a_nonzero_notimp_series_within_15_seconds(demo: str) -> None:
    _wait_for(demo, r'^dnsgap_probe_responses_total\{target="demo-auth",probe="update",'
                    r'rcode="NOTIMP",cause="not_implemented"\} [1-9]')  # fmt: skip


def test_demo_shows_dsotypeni_for_dns_push(demo: str) -> None:
    _wait_for(demo, r'^dnsgap_support_gap\{target="demo-dso-nopush",probe="dso_push",'
                    r'cause="dso_type_not_implemented"\} 1')  # fmt: skip


def test_demo_shows_a_server_without_dso(demo: str) -> None:
    _wait_for(demo, r'^dnsgap_probe_responses_total\{target="demo-no-dso",'
                    r'probe="dso_keepalive",rcode="NOTIMP",cause="dso_not_implemented"\} [1-9]')


def test_demo_shows_refused_and_silence(demo: str) -> None:
    text = _wait_for(demo, r'^dnsgap_support_gap\{target="demo-auth",probe="axfr",'
                           r'cause="refused"\} 1')  # fmt: skip
    text = _wait_for(demo, r'^dnsgap_support_gap\{target="demo-auth",probe="opcode15",'
                           r'cause="no_response"\} 1')  # fmt: skip
    assert text


def test_demo_serves_health_and_status_page(demo: str) -> None:
    _wait_for(demo, r"^dnsgap_build_info")
    assert fetch(f"{demo}/-/healthy") == "OK\n"
    page = fetch(f"{demo}/")
    assert "<table id=gaps>" in page
    assert "demo-auth" in page
