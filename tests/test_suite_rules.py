"""The suite's own rule: a missing real part (a server, promtool, openssl, tshark)
fails the tests that need it; nothing skips on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import require_binary

TESTS = Path(__file__).parent
_SKIPS = re.compile(r"pytest\.skip\(|\bskipif\(|importorskip\(|mark\.skip\b")


def test_a_missing_tool_fails_the_test_and_says_how_to_install_it() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"install-system-deps\.sh"):
        require_binary("dnsgap-no-such-tool", "/nonexistent/dnsgap-no-such-tool")


def test_a_present_tool_is_found() -> None:
    assert require_binary("openssl").endswith("openssl")


def test_no_test_skips_instead_of_failing() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py")) if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _SKIPS.search(line)
    ]  # fmt: skip
    assert offenders == []
