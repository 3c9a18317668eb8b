"""`prober profile --html`: the page and its SVG ladders, on tests/unit/profile_sample.py's
result. What a reader relies on: it parses, it fetches nothing, every property is there, the
links land, hostile text stays text, and no segment vanishes without being stated."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from html import escape
from html.parser import HTMLParser

import pytest

from prober.core.profile import (
    Basis,
    Ladder,
    ProbeKind,
    ProfileResult,
    PropertyName,
)
from prober.core.trace import SegmentRecord
from prober.output.profile_html import ladder_anchor, profile_html
from prober.output.svg_ladder import SVG_NS, format_duration, ladder_svg
from tests.unit.profile_sample import sample_profile

NS = {"svg": SVG_NS}
HOSTILE = "<script>&'\""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class _Balance(HTMLParser):
    """Every element closed, in order; ids and fragment links collected."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def _attrs(self, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value is not None:
                self.ids.append(value)
            if name == "href" and value is not None:
                self.hrefs.append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(attrs)  # <line .../> in SVG: opened and closed

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def result() -> ProfileResult:
    return sample_profile()


@pytest.fixture(scope="module")
def page(result: ProfileResult) -> str:
    return profile_html(result)


def parse(page: str) -> _Balance:
    parser = _Balance()
    parser.feed(page)
    parser.close()
    return parser


def svgs_in(page: str) -> list[ET.Element]:
    return [ET.fromstring(match) for match in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def segs(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{{{SVG_NS}}}g") if "seg" in g.get("class", "").split()]


def collapsed(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{{{SVG_NS}}}g") if g.get("class") == "collapsed"]


def all_text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def test_every_ladder_is_a_well_formed_accessible_svg(result: ProfileResult) -> None:
    for ladder in result.ladders:
        root = ET.fromstring(ladder_svg(ladder, title_id=f"t-{ladder.probe.value}"))
        assert root.tag == f"{{{SVG_NS}}}svg"
        assert root.get("role") == "img"
        labelled = root.get("aria-labelledby", "").split()
        title = root.find("svg:title", NS)
        assert title is not None and title.text == ladder.title
        ids = {element.get("id") for element in root.iter()}
        assert labelled and all(label in ids for label in labelled)


def test_the_page_parses_with_balanced_tags_and_its_svgs_are_xml(
    page: str, result: ProfileResult
) -> None:
    parser = parse(page)
    assert parser.problems == []
    assert parser.stack == []
    assert page.startswith("<!DOCTYPE html>")
    svgs = svgs_in(page)
    assert len(svgs) == len(result.ladders)
    assert all(svg.tag == f"{{{SVG_NS}}}svg" for svg in svgs)
    assert len(parser.ids) == len(set(parser.ids)), "ids must be unique in the page"


def test_every_property_is_in_the_report_with_its_value_and_basis(
    page: str, result: ProfileResult
) -> None:
    for name in PropertyName:
        prop = result.get(name)
        row = re.search(rf'<tr id="prop-{name.value}" class="basis-([a-z-]+)">(.*?)</tr>',
                        page, re.S)
        assert row is not None, name
        assert row.group(1) == prop.basis.value
        assert escape(prop.display) in row.group(2)
        assert escape(prop.evidence) in row.group(2)
    # UNKNOWN and NOT_MEASURED look different from a measured value (and in print: the
    # dashed border and italics are not backgrounds).
    assert any(p.basis is Basis.UNKNOWN for p in result.properties)
    assert any(p.basis is Basis.NOT_MEASURED for p in result.properties)
    assert "tr.basis-unknown td.value, tr.basis-not-measured td.value" in page


def test_the_page_fetches_nothing(page: str) -> None:
    without_ns = page.replace(f'xmlns="{SVG_NS}"', "")
    assert "http://" not in without_ns and "https://" not in without_ns
    lowered = page.lower()
    for forbidden in ("src=", "url(", "<script", "<link", "@import", "<img", "<iframe"):
        assert forbidden not in lowered, forbidden
    assert "default-src 'none'" in page  # and the browser is told so


def test_every_link_in_the_page_lands_on_an_element_of_the_page(page: str) -> None:
    parser = parse(page)
    assert parser.hrefs, "the report links its evidence"
    for href in parser.hrefs:
        assert href.startswith("#"), href
        assert href[1:] in parser.ids, href


def test_a_propertys_segments_link_to_the_arrows_and_are_marked_there(
    page: str, result: ProfileResult
) -> None:
    prop = result.get(PropertyName.INITIAL_RTO_S)
    [ref] = prop.segments
    for index in ref.indices:
        assert f'href="#{ladder_anchor(ref.ladder)}-s{index}"' in page
    halfopen = next(svg for svg in svgs_in(page)
                    if svg.get("aria-labelledby", "").startswith("ladder-halfopen-"))
    by_index = {g.get("data-index"): g for g in segs(halfopen)}
    number = [p.name for p in result.properties].index(PropertyName.INITIAL_RTO_S) + 1
    for index in ref.indices:
        arrow = by_index[str(index)]
        assert arrow.get("id") == f"ladder-halfopen-s{index}"
        assert "ref" in (arrow.get("class") or "").split()
        assert str(number) in all_text(arrow)  # "[1,10-11,13]": the report rows citing it


def test_hostile_strings_are_escaped_everywhere(result: ProfileResult) -> None:
    ladder = result.ladders[0]
    records = (replace(ladder.records[0], note=HOSTILE, send_error=None),
               *ladder.records[1:])
    failed = replace(ladder.records[-1], note=HOSTILE, send_error=HOSTILE)
    hostile_ladder = replace(ladder, title=HOSTILE, records=(*records, failed),
                             notes=(HOSTILE,))
    props = tuple(
        replace(p, display=HOSTILE, evidence=HOSTILE, meaning=HOSTILE, rests_on=HOSTILE)
        if i % 2 else p for i, p in enumerate(result.properties)
    )
    hostile = replace(
        result, host=HOSTILE, source=HOSTILE, notes=(HOSTILE,), properties=props,
        match=replace(result.match, explanation=HOSTILE, closest=HOSTILE),
        ladders=(hostile_ladder, *result.ladders[1:]),
    )
    page = profile_html(hostile)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;&amp;" in page
    parser = parse(page)
    assert parser.problems == [] and parser.stack == []
    assert HOSTILE in "".join(parser.text)  # shown as text, unchanged
    svgs = svgs_in(page)  # still XML
    assert HOSTILE in all_text(svgs[0])
    svg = ET.fromstring(ladder_svg(hostile_ladder, title_id="x", us=HOSTILE, peer=HOSTILE))
    assert svg.find("svg:title", NS) is not None


def test_each_record_is_an_arrow_or_stated_as_collapsed(result: ProfileResult) -> None:
    for ladder in result.ladders:
        svg = ET.fromstring(ladder_svg(ladder, title_id="t"))
        drawn = [int(g.get("data-index", "-1")) for g in segs(svg)]
        hidden = 0
        for group in collapsed(svg):
            count = int(group.get("data-collapsed", "0"))
            hidden += count
            assert f"{count} segments not drawn" in all_text(group)
        assert len(drawn) + hidden == len(ladder.records), ladder.probe
        assert len(set(drawn)) == len(drawn)
        assert svg.get("data-drawn") == str(len(drawn))
        assert f"{len(drawn)} of {len(ladder.records)} segments drawn" in all_text(svg)


def test_a_timewait_series_collapses_honestly_and_its_evidence_stays(
    page: str, result: ProfileResult
) -> None:
    ladder = result.ladder(ProbeKind.TIMEWAIT)
    assert ladder is not None and len(ladder.records) > 100
    svg = next(svg for svg in svgs_in(page)
               if svg.get("aria-labelledby", "").startswith("ladder-timewait-title"))
    assert len(segs(svg)) < 35  # readable
    texts = [all_text(group) for group in collapsed(svg)]
    assert texts and all("more the same exchange (S →, . ←), every 1.000 s" in t
                         for t in texts)
    assert all("seq/ack as drawn" in t for t in texts)
    cited = {i for p in result.properties for ref in p.segments
             if ref.ladder is ProbeKind.TIMEWAIT for i in ref.indices}
    drawn = {int(g.get("data-index", "-1")) for g in segs(svg)}
    assert cited <= drawn


def test_a_backoff_is_never_collapsed_and_its_gaps_are_marked(result: ProfileResult) -> None:
    ladder = result.ladder(ProbeKind.HALFOPEN)
    assert ladder is not None
    svg = ET.fromstring(ladder_svg(ladder, title_id="t"))
    assert collapsed(svg) == []
    assert len(segs(svg)) == len(ladder.records)
    gaps = [all_text(g) for g in svg.iter(f"{{{SVG_NS}}}g") if g.get("class") == "gap"]
    assert [gap.split(" ")[0] for gap in gaps[:6]] == [
        "1.000", "2.001", "4.001", "8.001", "16.00", "32.00"
    ]
    times = [all_text(t) for t in svg.iter(f"{{{SVG_NS}}}text") if t.get("class") == "time"]
    assert times[:3] == ["0", "+47 µs", "+1.000 s"]


def test_states_are_written_where_they_change(result: ProfileResult) -> None:
    ladder = result.ladder(ProbeKind.CLOSE)
    assert ladder is not None
    svg = ET.fromstring(ladder_svg(ladder, title_id="t"))
    states = [all_text(t) for t in svg.iter(f"{{{SVG_NS}}}text") if t.get("class") == "state"]
    for state in ("FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK",
                  "CLOSED"):
        assert state in states
    assert states.count("CLOSE-WAIT") == 1  # once, where it starts


def test_arrows_follow_the_timestamps_not_the_handling_order(
    result: ProfileResult,
) -> None:
    ladder = result.ladders[0]
    first, second, third = ladder.records
    # The SYN/ACK handled before our SYN's stamp is known: records out of time order.
    swapped = replace(ladder, records=(second, first, third))
    svg = ET.fromstring(ladder_svg(swapped, title_id="t"))
    assert [g.get("data-index") for g in segs(svg)] == ["1", "0", "2"]


def test_a_failed_send_is_dashed_with_its_error(result: ProfileResult) -> None:
    ladder = result.ladder(ProbeKind.TIMEWAIT_RST)
    assert ladder is not None
    svg = ET.fromstring(ladder_svg(ladder, title_id="t"))
    [failed] = [g for g in segs(svg) if "failed" in (g.get("class") or "").split()]
    index = int(failed.get("data-index", "-1"))
    error = ladder.records[index].send_error
    assert error and f"error: {error}" in all_text(failed)
    assert "NOT SENT" in all_text(failed)
    assert ".failed .arrow { stroke-dasharray" in ET.tostring(svg, encoding="unicode")


def test_an_empty_ladder_renders_a_placeholder(result: ProfileResult) -> None:
    empty = Ladder(ProbeKind.ECN, "ECN: a SYN with ECE and CWR", 40002, ())
    svg = ET.fromstring(ladder_svg(empty, title_id="t"))
    assert segs(svg) == []
    assert "no segments" in all_text(svg)
    page = profile_html(replace(result, ladders=(empty,)))
    parser = parse(page)
    assert parser.problems == [] and parser.stack == []
    nothing = profile_html(replace(result, ladders=()))
    assert "no ladders" in nothing
    assert parse(nothing).problems == []


def test_the_sample_and_the_page_are_deterministic(page: str) -> None:
    assert sample_profile() == sample_profile()
    assert profile_html(sample_profile()) == page


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0 µs"), (48_000, "48 µs"), (999_600, "1.00 ms"), (1_234_000, "1.23 ms"),
        (204_000_000, "204.0 ms"), (999_960_000, "1.000 s"), (32_000_000_000, "32.00 s"),
        (284_300_000_000, "284.3 s"),
    ],
)
def test_durations_are_in_sensible_units(ns: int, text: str) -> None:
    assert format_duration(ns) == text


def test_relative_numbers_below_the_isn_are_negative(result: ProfileResult) -> None:
    ladder = result.ladder(ProbeKind.TIMEWAIT)
    assert ladder is not None
    svg = ET.fromstring(ladder_svg(ladder, title_id="t"))
    assert "S seq -100000" in all_text(svg)
    assert all(isinstance(r, SegmentRecord) for r in ladder.records)


def test_the_header_says_what_was_probed_from_where_and_how(result: ProfileResult) -> None:
    page = profile_html(result)
    for text in ("198.18.0.18", "port <code>80</code>", "198.18.0.1", "2025-12-02 08:00:00 UTC",
                 "284.3 s", "full (every probe)"):
        assert text in page, text
    quick = profile_html(replace(result, quick=True, interrupted=True, target="2001:2::18",
                                 source="2001:2::1"))
    assert "quick (<code>--quick</code>" in quick
    assert "Interrupted" in quick
    svg = svgs_in(quick)[0]
    heads = [all_text(t) for t in svg.iter(f"{{{SVG_NS}}}text") if t.get("class") == "head-sub"]
    assert heads == ["[2001:2::1]:40001", "[2001:2::18]:80"]
