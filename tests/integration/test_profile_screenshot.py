"""`prober profile --html`'s page in a real browser: headless Chromium (Debian's
/usr/bin/chromium, installed by .ci/install) renders tests/unit/profile_sample.py's result
from a temporary file and takes a screenshot, which the test decodes with the standard
library alone (zlib, struct) and checks as a reader would glance at it: the size asked for,
not blank, more than a few colours (text, lines, anti-aliasing).

Chromium fetches nothing: it runs in a network namespace of its own (``unshare --net``:
only a loopback that is down), with every background service off and every host name
resolving to nothing, and the page itself forbids all fetches (its Content-Security-Policy).
It keeps its profile in the test's temporary directory, and is ended with its own process
group (a session of its own) if it outlives its timeout.

PROBER_SCREENSHOT=FILE.png keeps a copy of the screenshot.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from prober.core.profile import ProbeKind
from prober.output.profile_html import profile_html
from prober.output.svg_ladder import HEAD_H, SVG_NS, X_PEER, X_US, ladder_svg
from prober.output.svg_ladder import WIDTH as SVG_WIDTH
from tests.unit.profile_sample import sample_profile

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1200, 2400
TIMEOUT_S = 90.0  # a cold start on a shared 2-core machine takes 5-15 s

# Off: everything that phones home or fetches on start (updates, sync, metrics, safe
# browsing lists, translation, DNS prefetch). The network namespace is the guarantee; these
# keep Chromium from trying (and from waiting on its tries).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root: the sandbox needs an unprivileged user
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


@dataclass(frozen=True, slots=True)
class Image:
    width: int
    height: int
    pixels: list[tuple[int, ...]]  # RGB or RGBA, row by row


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Image:
    """An 8-bit, non-interlaced PNG of colour type 2 (RGB) or 6 (RGBA), all five filters.

    Args:
        data: the file's bytes.

    Returns:
        Its size and pixels.

    Raises:
        ValueError: not a PNG this decoder reads.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG signature")
    position, idat = 8, bytearray()
    width = height = bit_depth = colour = interlace = -1
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length:position + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            width, height, bit_depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        position += 12 + length
    if bit_depth != 8 or colour not in (2, 6) or interlace != 0:
        raise ValueError(f"unsupported PNG: depth {bit_depth}, colour {colour}, "
                         f"interlace {interlace}")
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    if len(raw) != height * (stride + 1):
        raise ValueError("IDAT holds the wrong number of bytes for the size")
    previous = bytearray(stride)
    pixels: list[tuple[int, ...]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            for i in range(stride):
                line[i] = (line[i] + previous[i]) & 0xFF
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                corner = previous[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, previous[i], corner)) & 0xFF
        elif kind != 0:
            raise ValueError(f"unknown filter type {kind} in row {y}")
        channels = [line[c::bpp] for c in range(bpp)]
        pixels.extend(zip(*channels, strict=True))
        previous = line
    return Image(width, height, pixels)


def _png(width: int, height: int, colour: int, rows: list[bytes], filters: list[int]) -> bytes:
    """A PNG with the given (already filtered) rows: for testing the decoder on itself."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    raw = b"".join(bytes([f]) + row for f, row in zip(filters, rows, strict=True))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_the_decoder_undoes_every_filter() -> None:
    # 2x5 RGB, one row per filter type; expected pixels worked out by hand from the spec.
    rows = [
        bytes([10, 20, 30, 40, 50, 60]),  # None
        bytes([1, 2, 3, 1, 1, 1]),  # Sub: second pixel = first + (1,1,1)
        bytes([5, 5, 5, 5, 5, 5]),  # Up: row above + 5
        bytes([4, 4, 4, 4, 4, 4]),  # Average
        bytes([1, 1, 1, 1, 1, 1]),  # Paeth
    ]
    image = decode_png(_png(2, 5, 2, rows, [0, 1, 2, 3, 4]))
    row0 = [(10, 20, 30), (40, 50, 60)]
    row1 = [(1, 2, 3), (2, 3, 4)]
    row2 = [(6, 7, 8), (7, 8, 9)]
    # Average: first pixel 4 + (0 + up) // 2; second 4 + (left + up) // 2.
    row3 = [(4 + 3, 4 + 3, 4 + 4), (4 + (7 + 7) // 2, 4 + (7 + 8) // 2, 4 + (8 + 9) // 2)]
    # Paeth: first pixel predicts from up (left, corner 0); second picks among left/up/corner.
    first = tuple(1 + _paeth(0, up, 0) for up in row3[0])
    second = tuple(1 + _paeth(left, up, corner)
                   for left, up, corner in zip(first, row3[1], row3[0], strict=True))
    assert image.pixels == row0 + row1 + row2 + row3 + [first, second]
    rgba = decode_png(_png(1, 1, 6, [bytes([1, 2, 3, 4])], [0]))
    assert rgba.pixels == [(1, 2, 3, 4)]


def _screenshot(
    page: Path, out: Path, profile: Path, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> None:
    unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin")
    if unshare is None:
        pytest.skip("`unshare` (util-linux) is missing: Chromium cannot be kept off the network")
    command = [
        unshare, "--net", "--", CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
        f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", page.as_uri(),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(profile), "LANG": "C.UTF-8",
           "XDG_CONFIG_HOME": str(profile / "config"), "XDG_CACHE_HOME": str(profile / "cache")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own group: its zygote and renderers
        process.communicate(timeout=10)
        raise AssertionError(f"chromium took more than {TIMEOUT_S:.0f} s") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log = output.decode(errors="replace")[-3000:]
    assert process.returncode == 0, f"chromium exited {process.returncode}: {log}"
    assert out.exists(), f"chromium wrote no screenshot: {log}"


def _need_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/install does)")


def test_the_profile_page_renders_in_chromium(tmp_path: Path) -> None:
    _need_chromium()
    html = profile_html(sample_profile())
    page = tmp_path / "profile.html"
    page.write_text(html, encoding="utf-8")
    # The SVGs in the page as written are well-formed XML, in the SVG namespace.
    svgs = re.findall(r"<svg\b.*?</svg>", page.read_text(encoding="utf-8"), re.S)
    assert len(svgs) == len(sample_profile().ladders)
    for svg in svgs:
        assert ET.fromstring(svg).tag == f"{{{SVG_NS}}}svg"

    out = tmp_path / "profile.png"
    _screenshot(page, out, tmp_path / "chromium-profile")
    if os.environ.get("PROBER_SCREENSHOT"):
        shutil.copyfile(out, os.environ["PROBER_SCREENSHOT"])

    image = decode_png(out.read_bytes())
    assert (image.width, image.height) == (WIDTH, HEIGHT)
    rgb = [pixel[:3] for pixel in image.pixels]
    counts = collections.Counter(rgb)
    background, background_count = counts.most_common(1)[0]
    assert background == (255, 255, 255), "the page is black on white"
    ink = 1 - background_count / len(rgb)
    assert ink > 0.02, f"only {ink:.2%} of the screenshot is not background: blank?"
    assert len(counts) > 16, f"{len(counts)} colours: not text and lines"
    # Ink in every quarter of the height: the header, the match, the table all rendered (a
    # page that stopped rendering part-way leaves white below).
    quarter = len(rgb) // 4
    for part in range(4):
        block = rgb[part * quarter:(part + 1) * quarter]
        assert sum(p != background for p in block) > 0.01 * len(block), f"quarter {part}"


def test_a_ladder_renders_as_a_standalone_svg_file(tmp_path: Path) -> None:
    """The SVG alone (as a saved .svg would be opened) draws both lifelines top to bottom."""
    _need_chromium()
    ladder = sample_profile().ladder(ProbeKind.TIMEWAIT)
    assert ladder is not None
    svg = ladder_svg(ladder, title_id="timewait", us="prober 198.18.0.1:40007",
                     peer="peer 198.18.0.18:80")
    height = int(ET.fromstring(svg).get("height", "0"))
    assert 0 < height < 4000
    drawing = tmp_path / "timewait.svg"
    drawing.write_text(svg, encoding="utf-8")
    out = tmp_path / "timewait.png"
    _screenshot(drawing, out, tmp_path / "chromium-profile", size=(SVG_WIDTH, height))
    image = decode_png(out.read_bytes())
    assert (image.width, image.height) == (SVG_WIDTH, height)

    def dark(x: int, y: int) -> bool:
        return any(max(image.pixels[y * image.width + column][:3]) < 200
                   for column in (x - 1, x, x + 1))

    rows = range(HEAD_H, height - 50)
    for lifeline in (X_US, X_PEER):
        # Solid where segments are, dotted across gaps and collapsed runs: most rows inked.
        inked = sum(dark(lifeline, y) for y in rows)
        assert inked > 0.6 * len(rows), f"lifeline at x={lifeline}: {inked}/{len(rows)}"
    middle = (X_US + X_PEER) // 2
    assert sum(dark(middle, y) for y in rows) > 40  # the arrows and their labels
