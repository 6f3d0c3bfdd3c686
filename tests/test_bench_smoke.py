"""The bench's one command works end to end at tiny sizes (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_smoke_mode_writes_a_table_of_every_section(tmp_path: Path) -> None:
    out = tmp_path / "smoke.md"
    result = subprocess.run([sys.executable, "-m", "bench", "smoke", "--no-install",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    assert table.strip() == result.stdout.strip()
    for heading in ("## /probe over HTTP", "## Scheduled mode", "## Scrape cost",
                    "## Local limits", "## Goals", "## Reload",
                    "## Encrypted transports"):  # fmt: skip
        assert heading in table
    assert "| dnsgap /probe |" in table
    assert "| dnsgap /probe | doh |" in table
    assert "| dnsgap /probe | doq |" in table
    assert "| 100 (20 x 5) |" in table
    assert "- Machine: " in table


def test_bench_refuses_an_unknown_section() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "smoke", "--only", "nope"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "unknown section" in result.stderr
