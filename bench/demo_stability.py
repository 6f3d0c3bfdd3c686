"""``python -m bench.demo_stability``: does ``dnsgap demo`` keep every cause steady?

Issue 10's "done when": the demo runs ten minutes and no (target, probe) pair
changes cause except ``demo-regress``, whose regression after 45 s is the point
of it. This starts ``python -m exporter demo`` on a free port, reads /metrics
every ``--poll`` seconds and records, per pair, every cause it shows (the
``dnsgap_support_gap`` series at 1, or ``none`` once the pair has run with no
gap) and the final ``dnsgap_gap_changes_total``. The counter sees every change,
even one that the polling would miss between two reads.

    python -m bench.demo_stability --seconds 600 --out bench/results/demo-stability.md

Exit status 0 when stable, 1 when a pair other than ``demo-regress`` changed.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.stats import samples

#: The one demo target whose causes are meant to change (exporter/demo.py).
EXPECTED_TO_CHANGE = frozenset({"demo-regress"})

_PAIR = re.compile(r'target="([^"]*)",probe="([^"]*)"')
_CAUSE = re.compile(r'cause="([^"]*)"')

Pair = tuple[str, str]


def pair_of(labels: str) -> Pair | None:
    match = _PAIR.search(labels)
    return (match[1], match[2]) if match else None


def causes_now(text: str) -> dict[Pair, str]:
    """The cause each probed pair shows in one /metrics text (``none``: no gap)."""
    current: dict[Pair, str] = {}
    for (_, labels), _value in samples(text, "dnsgap_probe_last_run_timestamp_seconds").items():
        pair = pair_of(labels)
        if pair is not None:
            current[pair] = "none"
    for (name, labels), value in samples(text, "dnsgap_support_gap").items():
        pair, cause = pair_of(labels), _CAUSE.search(labels)
        if name == "dnsgap_support_gap" and value == 1 and pair is not None and cause:
            current[pair] = cause[1]
    return current


def counters(text: str, name: str) -> dict[str, float]:
    """{labels text: value} of one counter family (``name`` exactly)."""
    return {labels: value for (found, labels), value in samples(text, name).items()
            if found == name}  # fmt: skip


@dataclass
class Watch:
    """What the polling saw: per pair, (seconds since start, cause) at each change."""

    seconds: float = 0.0
    polls: int = 0
    timeline: dict[Pair, list[tuple[float, str]]] = field(default_factory=dict)
    gap_changes: dict[Pair, float] = field(default_factory=dict)
    skipped: dict[str, float] = field(default_factory=dict)
    sessions_closed: dict[str, float] = field(default_factory=dict)

    def observe(self, at: float, text: str) -> None:
        self.polls += 1
        for pair, cause in causes_now(text).items():
            seen = self.timeline.setdefault(pair, [])
            if not seen or seen[-1][1] != cause:
                seen.append((at, cause))
        for labels, value in counters(text, "dnsgap_gap_changes_total").items():
            pair = pair_of(labels)
            if pair is not None:
                self.gap_changes[pair] = value
        self.skipped = counters(text, "dnsgap_probes_skipped_total")
        self.sessions_closed = counters(text, "dnsgap_dso_sessions_closed_total")

    def flapping(self) -> list[Pair]:
        """Pairs outside ``demo-regress`` whose cause changed (counter or polling)."""
        pairs = set(self.timeline) | set(self.gap_changes)
        return sorted(pair for pair in pairs if pair[0] not in EXPECTED_TO_CHANGE
                      and (self.gap_changes.get(pair, 0) > 0
                           or len(self.timeline.get(pair, ())) > 1))  # fmt: skip


def watch_demo(seconds: float, poll: float = 1.0, workdir: Path | None = None) -> Watch:
    """Run ``dnsgap demo`` for ``seconds`` and watch its /metrics."""
    port = procs.free_port()
    with tempfile.TemporaryDirectory(prefix="dnsgap-demo-") as tmp:
        directory = workdir or Path(tmp)
        demo = procs.start("demo", [procs.PYTHON, "-m", "exporter", "demo", "--listen",
                                    f"127.0.0.1:{port}"], directory)  # fmt: skip
        watch = Watch()
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            procs.wait_http(demo, url, timeout=60)
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                if not demo.alive():
                    raise RuntimeError(f"the demo exited: {demo.log.read_text()[-2000:]}")
                watch.observe(elapsed, procs.http_get(url, timeout=10).decode())
                time.sleep(max(0.0, min(poll, seconds - elapsed)))
            watch.observe(time.monotonic() - start, procs.http_get(url, timeout=10).decode())
            watch.seconds = time.monotonic() - start
        finally:
            demo.stop()
    return watch


def report(watch: Watch) -> str:
    """A markdown report of one watch."""
    flapping = watch.flapping()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# `dnsgap demo` cause stability",
        "",
        f"- Run: {now}, {watch.seconds:.0f} s, /metrics read {watch.polls} times.",
        f"- Verdict: **{'stable' if not flapping else 'FLAPPING'}** "
        f"({len(flapping)} pair(s) outside demo-regress changed cause).",
        "",
        "| target | probe | dnsgap_gap_changes_total | causes seen (s since start: cause) |",
        "|---|---|---|---|",
    ]
    for pair in sorted(set(watch.timeline) | set(watch.gap_changes)):
        seen = ", ".join(f"{at:.0f}: {cause}" for at, cause in watch.timeline.get(pair, ()))
        lines.append(f"| {pair[0]} | {pair[1]} | {watch.gap_changes.get(pair, 0):.0f} | {seen} |")
    lines += ["", "Skipped runs: " + (", ".join(
        f"{labels} {value:.0f}" for labels, value in sorted(watch.skipped.items())) or "none"),
        "DSO sessions closed: " + (", ".join(
            f"{labels} {value:.0f}" for labels, value in sorted(watch.sessions_closed.items()))
            or "none"), ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_stability",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    watch = watch_demo(args.seconds, args.poll)
    text = report(watch)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 1 if watch.flapping() else 0


if __name__ == "__main__":
    sys.exit(main())
