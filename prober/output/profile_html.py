"""`prober profile --html FILE`: the whole profile as one self-contained HTML5 page.

Header (target, source, when, how long, quick or full), the stack match, the report table
(one row per property: value, basis, evidence with links to the segments it rests on, the
assumption an inferred value needs, what it usually means), the notes, then every probe's
ladder as an SVG sequence diagram (``prober.output.svg_ladder``) in a <figure>.

Self-contained on purpose: the page is evidence someone may open years later, offline, or
attach to a ticket, so it fetches nothing (no external CSS, fonts, images or scripts; no
script at all). A property's segment links jump to the arrow (``#ladder-<probe>-s<index>``,
the arrow highlighted with CSS :target), and each cited arrow carries the numbers of the
report rows that cite it, which also works on paper. Prints black on white.

Reads the result object only; everything it writes is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from prober.core.profile import Basis, Ladder, ProbeKind, ProfileResult, Property, SegmentRef
from prober.output.svg_ladder import EN_DASH, format_duration, ladder_svg

# A ladder with more drawn rows than this starts a new page when printed; smaller ones share
# a page (a three-segment handshake alone on a page wastes paper).
PAGE_BREAK_ROWS = 12

_BASIS_TEXT = {
    Basis.MEASURED: "measured",
    Basis.INFERRED: "inferred",
    Basis.UNKNOWN: "unknown",
    Basis.NOT_MEASURED: "not measured",
}

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
  color: #000; background: #fff; margin: 1.5rem auto; max-width: 1160px; padding: 0 1rem;
  line-height: 1.4; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; }
h2 { font-size: 1.2rem; border-bottom: 2px solid #000; padding-bottom: .15rem;
  margin-top: 2rem; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: .92em; }
a { color: #0645ad; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem;
  margin: .5rem 0; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; }
.interrupted { font-weight: bold; border: 2px solid #000; padding: .3rem .6rem;
  display: inline-block; }
.verdict { font-size: 1.1rem; }
.verdict .stack { font-weight: bold; }
.verdict .stack.none { font-style: italic; }
ul.compare { padding-left: 1.2rem; }
table.report { border-collapse: collapse; width: 100%; font-size: .9rem; }
table.report th, table.report td { border: 1px solid #999; padding: .3rem .45rem;
  vertical-align: top; text-align: left; }
table.report thead th { border-bottom: 2px solid #000; background: #f2f2f2; }
table.report td.num { text-align: right; color: #444; }
table.report td.value { font-weight: bold; }
table.report td.name code { font-weight: bold; }
.basis { display: inline-block; padding: 0 .35rem; border: 1px solid #000;
  border-radius: 3px; font-size: .82rem; white-space: nowrap; }
.basis-inferred .basis { border-style: dotted; }
.basis-unknown .basis, .basis-not-measured .basis { border-style: dashed; }
tr.basis-unknown td.value, tr.basis-not-measured td.value { font-weight: normal;
  font-style: italic; color: #555; }
tr.basis-unknown td:first-child, tr.basis-not-measured td:first-child {
  border-left: 4px dashed #000; }
tr.basis-not-measured td { color: #555; }
.segrefs { display: block; margin-top: .2rem; font-size: .82rem; }
.differs { font-weight: bold; }
tr:target { outline: 3px solid #b00000; }
.muted { color: #555; }
figure.ladder-fig { margin: 2rem 0; break-inside: avoid; }
figure.ladder-fig figcaption { margin-bottom: .4rem; }
figure.ladder-fig figcaption .fig-no { font-weight: bold; }
figure.ladder-fig svg { max-width: 100%; height: auto; display: block;
  border: 1px solid #ccc; }
figure.ladder-fig:target figcaption { outline: 2px solid #b00000; }
ul.fig-notes { margin: .2rem 0 .4rem; padding-left: 1.2rem; font-size: .9rem; }
footer { margin-top: 2rem; font-size: .8rem; color: #555; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  a { color: #000; text-decoration: none; }
  table.report thead th { background: none; }
  table.report { font-size: 8.5pt; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; }
  figure.ladder-fig { break-inside: avoid; }
  figure.ladder-fig.big { break-before: page; }
  figure.ladder-fig svg { border: none; }
  tr:target, figure.ladder-fig:target figcaption { outline: none; }
  h2 { break-after: avoid; }
}
"""


def ladder_anchor(probe: ProbeKind) -> str:
    """The id of a probe's figure in the page, e.g. ``ladder-halfopen``.

    Args:
        probe: the probe whose ladder it is.

    Returns:
        The fragment (without ``#``).
    """
    return f"ladder-{probe.value}"


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _numbers(numbers: Sequence[int]) -> str:
    """Report row numbers as "2-7,9" with an en dash (consecutive ones joined)."""
    spans: list[list[int]] = []
    for number in sorted(set(numbers)):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ",".join(str(a) if a == b else f"{a}{EN_DASH}{b}" for a, b in spans)


def _value(prop: Property) -> str:
    text = prop.display
    if prop.error is not None and "±" not in text:
        text += f" ± {prop.error:g}" + (f" {prop.unit}" if prop.unit else "")
    return text


def _segment_links(refs: Sequence[SegmentRef], drawn: dict[ProbeKind, Ladder]) -> str:
    parts = []
    for ref in refs:
        ladder = drawn.get(ref.ladder)
        anchor = ladder_anchor(ref.ladder)
        if ladder is None:
            parts.append(f'<span class="muted">{escape(ref.ladder.value)} (no ladder)</span>')
            continue
        links = [
            f'<a href="#{escape(anchor)}-s{index}">#{index + 1}</a>'
            if 0 <= index < len(ladder.records)
            else f'<span class="muted">#{index + 1}?</span>'
            for index in ref.indices
        ]
        parts.append(
            f'<a href="#{escape(anchor)}">{escape(ref.ladder.value)}</a> ' + " ".join(links)
        )
    return '<span class="segrefs">segments: ' + "; ".join(parts) + "</span>" if parts else ""


def _header(result: ProfileResult) -> list[str]:
    when = datetime.fromtimestamp(result.started_ns / 1e9, tz=UTC)
    target = _endpoint(result.target, result.port)
    name = result.host if result.host and result.host != result.target else result.target
    out = [
        "<header>",
        f"<h1>TCP profile of {escape(name)} <span class=\"mono\">({escape(target)})</span>"
        "</h1>",
        '<dl class="meta">',
        f"<dt>Target</dt><dd>{escape(result.host)} → <code>{escape(result.target)}</code> "
        f"port <code>{result.port}</code></dd>",
        f"<dt>Source</dt><dd><code>{escape(result.source)}</code></dd>",
        f"<dt>Started</dt><dd>{escape(when.strftime('%Y-%m-%d %H:%M:%S'))} UTC</dd>",
        f"<dt>Elapsed</dt><dd>{escape(format_duration(round(result.elapsed_s * 1e9)))}</dd>",
        "<dt>Mode</dt><dd>"
        + ("quick (<code>--quick</code>: the long probes did not run)" if result.quick
           else "full (every probe)")
        + "</dd>",
        "</dl>",
    ]
    if result.interrupted:
        out.append('<p class="interrupted">Interrupted: some probes did not finish; their '
                   "properties are not measured.</p>")
    out.append("</header>")
    return out


def _match(result: ProfileResult) -> list[str]:
    match = result.match
    if match.stack is not None:
        verdict = f'<span class="stack">{escape(match.stack)}</span>'
    else:
        verdict = '<span class="stack none">unknown</span>'
        if match.closest:
            verdict += f" (closest: <strong>{escape(match.closest)}</strong>)"
    compared = escape(match.stack or match.closest or "the closest stack")

    def names(items: Sequence[object]) -> str:
        if not items:
            return '<span class="muted">none</span>'
        return ", ".join(
            f'<a href="#prop-{escape(str(item))}"><code>{escape(str(item))}</code></a>'
            for item in items
        )

    out = [
        '<section id="match">',
        "<h2>Stack match</h2>",
        f'<p class="verdict">Stack: {verdict}</p>',
        f"<p>{escape(match.explanation)}</p>",
        '<ul class="compare">',
        f"<li>Agree with {compared} ({len(match.agree)}): {names(match.agree)}</li>",
        f"<li>Disagree with {compared} ({len(match.disagree)}): {names(match.disagree)}</li>",
    ]
    if match.candidates:
        out.append(
            "<li>Every stack that agrees on all compared properties: "
            + ", ".join(escape(c) for c in match.candidates) + "</li>"
        )
    out += ["</ul>", "</section>"]
    return out


def _report(result: ProfileResult, drawn: dict[ProbeKind, Ladder]) -> list[str]:
    match = result.match
    against = match.stack or match.closest
    disagree = set(match.disagree)
    agree = set(match.agree)
    out = [
        '<section id="report">',
        "<h2>Properties</h2>",
        '<table class="report">',
        '<colgroup><col style="width:3%"><col style="width:15%"><col style="width:12%">'
        '<col style="width:8%"><col style="width:32%"><col style="width:13%">'
        '<col style="width:17%"></colgroup>',
        "<thead><tr><th>#</th><th>Property</th><th>Value</th><th>Basis</th>"
        "<th>Evidence</th><th>Rests on</th><th>Meaning</th></tr></thead>",
        "<tbody>",
    ]
    for number, prop in enumerate(result.properties, start=1):
        basis = _BASIS_TEXT[prop.basis]
        meaning = escape(prop.meaning) if prop.meaning else ""
        if against and prop.name in disagree:
            meaning += (" " if meaning else "") + (
                f'<span class="differs">≠ {escape(against)}</span>'
            )
        elif against and prop.name in agree:
            meaning += (" " if meaning else "") + f'<span class="muted">= {escape(against)}'
            meaning += "</span>"
        out.append(
            f'<tr id="prop-{escape(prop.name.value)}" '
            f'class="basis-{escape(prop.basis.value)}">'
            f'<td class="num">{number}</td>'
            f'<td class="name"><code>{escape(prop.name.value)}</code></td>'
            f'<td class="value">{escape(_value(prop))}</td>'
            f'<td><span class="basis">{escape(basis)}</span></td>'
            f"<td>{escape(prop.evidence)}{_segment_links(prop.segments, drawn)}</td>"
            f"<td>{escape(prop.rests_on) if prop.rests_on else ''}</td>"
            f"<td>{meaning}</td>"
            "</tr>"
        )
    out += ["</tbody>", "</table>", "</section>"]
    return out


def _figures(result: ProfileResult) -> list[str]:
    out = ['<section id="ladders">', "<h2>Ladders</h2>"]
    if not result.ladders:
        out.append('<p class="muted">No probe ran: no ladders.</p>')
    # Which report rows cite each segment: written beside the arrow (and never collapsed).
    cited: dict[ProbeKind, dict[int, list[int]]] = {}
    for number, prop in enumerate(result.properties, start=1):
        for ref in prop.segments:
            for index in ref.indices:
                cited.setdefault(ref.ladder, {}).setdefault(index, []).append(number)
    us_address = result.source
    seen: set[str] = set()
    for figure_number, ladder in enumerate(result.ladders, start=1):
        anchor = ladder_anchor(ladder.probe)
        if anchor in seen:  # a second ladder of one probe: ids stay unique
            anchor = f"{anchor}-{figure_number}"
        seen.add(anchor)
        marks = {
            index: "[" + _numbers(numbers) + "]"
            for index, numbers in cited.get(ladder.probe, {}).items()
        } if anchor == ladder_anchor(ladder.probe) else {}
        svg = ladder_svg(
            ladder,
            title_id=f"{anchor}-title",
            id_prefix=anchor,
            us=f"prober {_endpoint(us_address, ladder.source_port)}",
            peer=f"peer {_endpoint(result.target, result.port)}",
            marks=marks,
        )
        big = len(ladder.records) > PAGE_BREAK_ROWS
        caption = [
            f'<span class="fig-no">Figure {figure_number}.</span> {escape(ladder.title)} '
            f'<span class="muted">(probe <code>{escape(ladder.probe.value)}</code>, source '
            f"port {ladder.source_port}, {len(ladder.records)} segments)</span>"
        ]
        if marks:
            caption.append('<br><span class="muted">[n] beside an arrow: the report rows '
                           "that cite it.</span>")
        notes = (
            '<ul class="fig-notes">'
            + "".join(f"<li>{escape(note)}</li>" for note in ladder.notes)
            + "</ul>"
            if ladder.notes else ""
        )
        out.append(
            f'<figure id="{escape(anchor)}" class="ladder-fig{" big" if big else ""}">'
            f"<figcaption>{''.join(caption)}{notes}</figcaption>{svg}</figure>"
        )
    out.append("</section>")
    return out


def profile_html(result: ProfileResult) -> str:
    """The profile as one self-contained HTML5 page (it fetches nothing, runs no script).

    Args:
        result: the outcome of ``prober profile``.

    Returns:
        The page's text (UTF-8 when written).
    """
    drawn: dict[ProbeKind, Ladder] = {}
    for ladder in result.ladders:
        drawn.setdefault(ladder.probe, ladder)
    target = _endpoint(result.target, result.port)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No fetches of any kind: a policy the browser enforces, not just our habit.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>prober profile: {escape(result.host)} ({escape(target)})</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        *_header(result),
        *_match(result),
        *_report(result, drawn),
        '<section id="notes">',
        "<h2>Notes</h2>",
    ]
    if result.notes:
        parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in result.notes) + "</ul>")
    else:
        parts.append('<p class="muted">None.</p>')
    parts.append("</section>")
    parts += _figures(result)
    parts += [
        "<footer>Written by prober profile. Relative sequence numbers; times since each "
        "ladder's first segment. Segment numbers (#n) are the records' indices in the "
        "JSON output's <code>ladders[].segments</code>.</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)
