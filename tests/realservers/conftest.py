"""Fixtures that start each real Debian DNS server once per test session.

Every fixture yields a :class:`~.launch.RunningServer` (``.host``, ``.port``,
``.zone``, ``.name``, ``.pid``). A missing binary fails the test (CI installs every
server with scripts/install-system-deps.sh).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .launch import BACKENDS, SPECS, LaunchError, RunningServer, launch, stop


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.realserver)


def _start(
    name: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    backend_name = BACKENDS.get(name)
    backend = request.getfixturevalue(backend_name) if backend_name else None
    workdir = tmp_path_factory.mktemp(name, numbered=True)
    try:
        server = launch(name, workdir, backend)
    except LaunchError as error:  # a MissingServerError too: a missing server fails
        pytest.fail(str(error), pytrace=False)
    try:
        yield server
    finally:
        stop(server.process)


def _fixture(name: str):  # type: ignore[no-untyped-def]
    @pytest.fixture(scope="session", name=name)
    def server(
        tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
    ) -> Iterator[RunningServer]:
        yield from _start(name, tmp_path_factory, request)

    server.__doc__ = f"A running {SPECS[name].package} ({name}) answering gap.test."
    return server


bind_open = _fixture("bind_open")
bind_closed = _fixture("bind_closed")
nsd = _fixture("nsd")
knot = _fixture("knot")
unbound = _fixture("unbound")
pdns_auth = _fixture("pdns_auth")
pdns_recursor = _fixture("pdns_recursor")
kresd = _fixture("kresd")
dnsdist = _fixture("dnsdist")
dnsmasq = _fixture("dnsmasq")

#: Every server fixture name, in the order the docs list them.
SERVER_NAMES = tuple(SPECS)
