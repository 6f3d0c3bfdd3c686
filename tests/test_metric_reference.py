"""The README's metric table is the contract: it matches exporter.metrics.METRICS and a
live /metrics of `dnsgap demo` (names, types, labels, help), and promtool lints it clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import METRICS
from tests.live_demo import DEMO_SETTLED, ROOT, running_demo, wait_for_metrics

#: Labels a target's `labels:` adds to dnsgap_probe_info only (the demo config's), and
#: those of the servers of a zone target.
DEMO_INFO_EXTRA_LABELS = frozenset({"role", "zone", "ns_name"})


@dataclass(frozen=True)
class MetricRow:
    name: str
    type: str
    labels: frozenset[str]
    help: str


def readme_metric_table() -> list[MetricRow]:
    """The rows of the README's `## Metrics` table, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.fullmatch(r"\|\s*`(dnsgap_\w+)`\s*\|([^|]*)\|([^|]*)\|(.*)\|\s*", line)
        if match is None:
            continue
        name, kind, labels, help_text = (part.strip() for part in match.groups())
        rows.append(MetricRow(name, kind, frozenset(
            label.strip() for label in labels.split(",") if label.strip()), help_text))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def live_metrics() -> Iterator[str]:
    with running_demo() as base:
        yield wait_for_metrics(base, *DEMO_SETTLED)


def _label_sets(text: str) -> dict[str, tuple[str, list[frozenset[str]]]]:
    """family name -> (type, label-name set of every sample, without histogram `le`)."""
    out = {}
    for family in text_string_to_metric_families(text):
        sets = [frozenset(sample.labels) - {"le"} for sample in family.samples]
        out[family.name] = (family.type, sets)
    return out


def test_readme_table_lists_every_metric_of_the_contract_in_order() -> None:
    rows = readme_metric_table()
    assert [row.name for row in rows] == [name for name, _, _ in METRICS]


def test_readme_table_types_and_help_match_the_contract() -> None:
    contract = {name: (kind, help_text) for name, kind, help_text in METRICS}
    for row in readme_metric_table():
        assert (row.type, row.help) == contract[row.name], row.name


def test_live_metrics_have_exactly_the_readme_names_types_and_help(live_metrics: str) -> None:
    rows = readme_metric_table()
    help_lines = dict(re.findall(r"^# HELP (\S+) (.*)$", live_metrics, re.MULTILINE))
    type_lines = dict(re.findall(r"^# TYPE (\S+) (\S+)$", live_metrics, re.MULTILINE))
    assert list(help_lines) == [row.name for row in rows]
    for row in rows:
        assert type_lines[row.name] == row.type, row.name
        assert help_lines[row.name] == row.help, row.name


def test_every_readme_metric_has_samples_in_the_demo(live_metrics: str) -> None:
    families = _label_sets(live_metrics)
    # The parser names counters without `_total`; map back to the README's names.
    empty = [row.name for row in readme_metric_table()
             if not families[row.name.removesuffix("_total")][1]]  # fmt: skip
    assert empty == []


def test_live_label_names_are_the_readme_labels(live_metrics: str) -> None:
    families = _label_sets(live_metrics)
    for row in readme_metric_table():
        kind, label_sets = families[row.name.removesuffix("_total")]
        assert kind == row.type, row.name
        for labels in label_sets:
            if row.name == "dnsgap_probe_info":
                # A target's extra labels ride on the info metric only (README).
                assert row.labels <= labels, (row.name, labels)
                assert labels - row.labels <= DEMO_INFO_EXTRA_LABELS, (row.name, labels)
            else:
                assert labels == row.labels, (row.name, sorted(labels))


def test_promtool_check_metrics_finds_no_lint_problems(live_metrics: str) -> None:
    promtool = shutil.which("promtool") or pytest.fail(
        "promtool is not installed (see scripts/install-system-deps.sh)")
    result = subprocess.run([promtool, "check", "metrics"], input=live_metrics,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""
