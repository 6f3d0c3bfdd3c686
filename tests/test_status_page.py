"""The status page at `/` of a running `dnsgap demo`, rendered by headless Chromium
(Debian `chromium`): the DOM holds the gap matrix and the detail table, and the
screenshot is a real PNG showing every cause class's colour."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from exporter.causes import REMEDIATION, Cause
from exporter.statuspage import CLASS_COLOURS
from tests.live_demo import fetch, running_demo, wait_for_metrics

pytestmark = pytest.mark.slow

DEMO_TARGETS = {"demo-auth", "demo-dso-push", "demo-dso-nopush", "demo-no-dso",
                "demo-dso-busy", "demo-regress", "demo-encrypted",
                # the demo's zone target: demo.example.'s one name server address
                "demo.example/ns1.demo.example/127.0.0.1"}  # fmt: skip
WIDTH, HEIGHT = 1400, 900


@dataclass(frozen=True)
class Rendered:
    dom: str
    png: bytes
    #: (width, height, bytes per pixel, pixels) of the decoded screenshot
    image: tuple[int, int, int, bytes]


def _chromium(tmp: Path, *action: str, url: str) -> str:
    binary = shutil.which("chromium") or pytest.fail(
        "chromium is not installed (see scripts/install-system-deps.sh)")
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp / 'profile'}",
         f"--window-size={WIDTH},{HEIGHT}", *action, url],
        capture_output=True, text=True, timeout=90, check=False, cwd=tmp,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    tmp = tmp_path_factory.mktemp("chromium")
    with running_demo() as base:
        # Every demo server probed once, including the DSOTYPENI and no-DSO ones.
        wait_for_metrics(base, r'^dnsgap_probe_success\{target="demo-dso-busy"',
                         r'^dnsgap_support_gap\{target="demo-dso-nopush",probe="dso_push",'
                         r'cause="dso_type_not_implemented"\} 1',
                         r'^dnsgap_support_gap\{target="demo-auth",probe="opcode15",'
                         r'cause="no_response"\} 1')  # fmt: skip
        # Every pair has run once (no "pending" cell) before the page is rendered.
        deadline = time.monotonic() + 30
        while 'data-cause="pending"' in fetch(f"{base}/") and time.monotonic() < deadline:
            time.sleep(0.5)
        dom = _chromium(tmp, "--dump-dom", url=f"{base}/")
        _chromium(tmp, f"--screenshot={tmp / 'page.png'}", url=f"{base}/")
    png = (tmp / "page.png").read_bytes()
    return Rendered(dom, png, decode_png(png))


# -- DOM ------------------------------------------------------------------------------


class _Tables(HTMLParser):
    """Rows of table#gaps (attributes and cell texts) and cells of table#matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.chips: list[dict[str, str]] = []
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "table":
            self.table = attributes.get("id")
        elif self.table == "gaps" and tag == "tr" and "data-target" in attributes:
            self.rows.append((attributes, []))
        elif self.table == "gaps" and tag == "td" and self.rows:
            self.rows[-1][1].append("")
            self.in_cell = True
        elif self.table == "matrix" and tag == "span" and "chip" in attributes.get("class", ""):
            self.chips.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None
        elif tag == "td":
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell and self.table == "gaps" and self.rows:
            self.rows[-1][1][-1] += data


def _tables(dom: str) -> _Tables:
    parser = _Tables()
    parser.feed(dom)
    return parser


def test_gap_table_has_a_row_for_every_demo_target(rendered: Rendered) -> None:
    rows = _tables(rendered.dom).rows
    assert {attrs["data-target"] for attrs, _ in rows} == DEMO_TARGETS
    header = ["target", "probe", "kind", "cause", "last rcode", "since", "remediation"]
    assert all(len(cells) == len(header) for _, cells in rows)


@pytest.mark.parametrize(("target", "probe", "cause", "rcode"), [
    ("demo-auth", "update", Cause.NOT_IMPLEMENTED, "NOTIMP"),
    ("demo-dso-nopush", "dso_push", Cause.DSO_TYPE_NOT_IMPLEMENTED, "DSOTYPENI"),
    ("demo-no-dso", "dso_keepalive", Cause.DSO_NOT_IMPLEMENTED, "NOTIMP"),
    ("demo-auth", "axfr", Cause.REFUSED, "REFUSED"),
    ("demo-auth", "opcode15", Cause.NO_RESPONSE, "none"),
    ("demo-dso-push", "dso_push", Cause.NONE, "NOERROR"),
])  # fmt: skip
def test_gap_table_row_shows_cause_rcode_and_remediation(
    rendered: Rendered, target: str, probe: str, cause: Cause, rcode: str
) -> None:
    rows = {(a["data-target"], a["data-probe"]): (a, c) for a, c in _tables(rendered.dom).rows}
    attrs, cells = rows[(target, probe)]
    assert attrs["data-cause"] == cause.value
    assert cells[3] == cause.value
    assert cells[4] == rcode
    assert cells[5].endswith(" ago")
    assert cells[6].startswith(REMEDIATION[cause])


def test_matrix_has_one_coloured_cell_per_probe(rendered: Rendered) -> None:
    tables = _tables(rendered.dom)
    chips = Counter(chip["class"].split()[1] for chip in tables.chips)
    assert sum(chips.values()) == len(tables.rows)
    for css in ("notimp", "dsotypeni", "nodso", "refused", "silent", "ok"):
        assert chips[css] >= 1, css


# -- screenshot -----------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw RGB(A) rows) of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack_from(">I", data, pos + 8 + length)[0]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), "only 8-bit, non-interlaced PNGs"
    bpp = {2: 3, 6: 4}[colour]
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out += line
        previous = line
    return width, height, bpp, bytes(out)


def _colour_counts(image: tuple[int, int, int, bytes]) -> Counter[tuple[int, int, int]]:
    _, _, bpp, pixels = image
    return Counter(zip(pixels[0::bpp], pixels[1::bpp], pixels[2::bpp], strict=True))


def test_screenshot_is_a_real_png_of_the_window_size(rendered: Rendered) -> None:
    width, height, _, pixels = rendered.image
    assert (width, height) == (WIDTH, HEIGHT)
    assert 20_000 < len(rendered.png) < 5_000_000
    assert len(set(pixels[::97])) > 50  # text and colours, not a blank page


def test_screenshot_shows_every_cause_colour_above_the_fold(rendered: Rendered) -> None:
    counts = _colour_counts(rendered.image)
    # More pixels than its legend chip alone (about 70 x 22): the matrix shows the cause.
    for css in ("notimp", "dsotypeni", "nodso", "refused", "silent", "ok"):
        colour = CLASS_COLOURS[css]
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert counts[rgb] > 3000, (css, colour, counts[rgb])


def test_matrix_shows_an_expected_answer_as_expected(rendered: Rendered) -> None:
    """demo-auth is surveyed as authoritative: BADVERS to EDNS version 1 is its healthy
    answer, in the palette's expected colour with a check mark, not its cause's."""
    chips = {chip["data-probe"]: chip for chip in _tables(rendered.dom).chips}
    assert chips["edns1"]["class"] == "chip expected"
    assert chips["edns1"]["data-cause"] == Cause.BAD_VERSION.value
    assert chips["ixfr"]["class"] == "chip notimp"  # demo-auth only
    assert "bad_version \u2713" in rendered.dom
