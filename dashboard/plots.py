"""Plots as inline SVG, drawn on the server: no plotting library on the request path and no
script in the browser. Each function returns markup safe to embed (labels are escaped)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Bar", "Point", "Span", "bar_chart", "line_chart", "scatter", "timeline"]

_W, _H = 560, 220
_L, _R, _T, _B = 48, 12, 12, 34
_BLUE, _RED, _GREY = "#2b6cb0", "#c53030", "#a0aec0"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""
    color: str = _BLUE


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    color: str = _BLUE
    href: str | None = None


@dataclass(frozen=True)
class Span:
    """One round on the timeline: block ranges of its phases."""

    round: int
    opened: int
    commit_end: int
    reveal_end: int
    finalized: int | None
    challenge_end: int | None
    state: str


def _nice(lo: float, hi: float) -> tuple[float, float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _svg(body: str, title: str, w: int = _W, h: int = _H) -> Markup:
    return Markup(
        f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def _axes(x_label: str, y_label: str, y_lo: float, y_hi: float, y_fmt: str) -> str:
    parts = [
        f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" stroke="#444"/>',
        f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" stroke="#444"/>',
        f'<text x="{(_L + _W - _R) / 2}" y="{_H - 4}" text-anchor="middle" class="ax">{escape(x_label)}</text>',
        (f'<text x="12" y="{(_T + _H - _B) / 2}" text-anchor="middle" class="ax" '
        f'transform="rotate(-90 12 {(_T + _H - _B) / 2})">{escape(y_label)}</text>'),
    ]
    for k in range(5):
        v = y_lo + (y_hi - y_lo) * k / 4
        y = _H - _B - (_H - _B - _T) * k / 4
        parts.append(f'<line x1="{_L - 3}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{_L - 5}" y="{y + 3:.1f}" text-anchor="end" class="tick">{format(v, y_fmt)}</text>')
    return "".join(parts)


def _empty(title: str, message: str) -> Markup:
    return _svg(f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" class="ax">{escape(message)}</text>', title)


def line_chart(points: Sequence[tuple[float, float]], *, title: str, x_label: str, y_label: str,
               y_fmt: str = ".2f", y_range: tuple[float, float] | None = None) -> Markup:
    pts = [(x, y) for x, y in points if math.isfinite(y)]
    if not pts:
        return _empty(title, "no data yet")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x_lo, x_hi = _nice(min(xs), max(xs))
    y_lo, y_hi = y_range or _nice(min(ys), max(ys))

    def sx(x: float) -> float:
        return _L + (x - x_lo) / (x_hi - x_lo) * (_W - _L - _R)

    def sy(y: float) -> float:
        return _H - _B - (y - y_lo) / (y_hi - y_lo) * (_H - _B - _T)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "" if len(pts) > 60 else "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{_BLUE}"><title>{x:g}: {format(y, y_fmt)}</title></circle>'
        for x, y in pts)
    ticks = "".join(
        f'<text x="{sx(x):.1f}" y="{_H - _B + 13}" text-anchor="middle" class="tick">{x:g}</text>'
        for x in _x_ticks(x_lo, x_hi))
    body = _axes(x_label, y_label, y_lo, y_hi, y_fmt) + ticks
    body += f'<polyline fill="none" stroke="{_BLUE}" stroke-width="2" points="{path}"/>' + dots
    return _svg(body, title)


def _x_ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    step = max(1, math.ceil(span / 10))
    start = math.ceil(lo)
    return [float(v) for v in range(start, math.floor(hi) + 1, step)]


def bar_chart(bars: Sequence[Bar], *, title: str, y_label: str, y_fmt: str = ".3g") -> Markup:
    if not bars:
        return _empty(title, "no data yet")
    hi = max(max(b.value for b in bars), 0.0) or 1.0
    width = (_W - _L - _R) / len(bars)
    parts = [_axes("", y_label, 0.0, hi, y_fmt)]
    for i, b in enumerate(bars):
        h = max(0.0, b.value) / hi * (_H - _B - _T)
        x = _L + i * width
        rect = (f'<rect x="{x + width * 0.1:.1f}" y="{_H - _B - h:.1f}" width="{max(width * 0.8, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{b.color}"><title>{escape(b.label)}: {format(b.value, y_fmt)}</title></rect>')
        parts.append(f'<a href="{escape(b.href)}">{rect}</a>' if b.href else rect)
        if len(bars) <= 16:
            parts.append(f'<text x="{x + width / 2:.1f}" y="{_H - _B + 13}" text-anchor="middle" class="tick">'
                         f'{escape(b.label[:8])}</text>')
    return _svg("".join(parts), title)


def scatter(points: Sequence[Point], *, title: str, x_label: str, y_label: str, x_fmt: str = ".3g",
            y_fmt: str = ".3g") -> Markup:
    if not points:
        return _empty(title, "no data yet")
    x_lo, x_hi = _nice(min(0.0, min(p.x for p in points)), max(p.x for p in points))
    y_lo, y_hi = _nice(0.0, max(max(p.y for p in points), 0.0))

    def sx(x: float) -> float:
        return _L + (x - x_lo) / (x_hi - x_lo) * (_W - _L - _R)

    def sy(y: float) -> float:
        return _H - _B - (y - y_lo) / (y_hi - y_lo) * (_H - _B - _T)

    parts = [_axes(x_label, y_label, y_lo, y_hi, y_fmt)]
    for k in range(5):
        v = x_lo + (x_hi - x_lo) * k / 4
        parts.append(f'<text x="{sx(v):.1f}" y="{_H - _B + 13}" text-anchor="middle" class="tick">{format(v, x_fmt)}</text>')
    for p in points:
        parts.append(f'<circle cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="4" fill="{p.color}" fill-opacity="0.8">'
                     f'<title>{escape(p.label)}: {format(p.x, x_fmt)}, {format(p.y, y_fmt)}</title></circle>')
    return _svg("".join(parts), title)


_STATE_COLOR = {"settled": "#2f855a", "challenge": "#d69e2e", "disputed": _RED, "corrected": _RED, "expired": _GREY,
                "dismissed": "#2f855a", "open": _GREY}


def timeline(spans: Sequence[Span], head: int, *, title: str = "round timeline (blocks)") -> Markup:
    """One row per round: commit window, reveal window, the wait for finalize, the challenge
    window; a vertical line at the current block."""
    if not spans:
        return _empty(title, "no round yet")
    row = 14
    h = _T + row * len(spans) + _B
    lo = min(s.opened for s in spans)
    hi = max([head] + [s.challenge_end or s.reveal_end for s in spans]) + 1
    w_plot = _W - _L - _R

    def sx(b: float) -> float:
        return _L + (b - lo) / max(hi - lo, 1) * w_plot

    parts = []
    for i, s in enumerate(spans):
        y = _T + i * row
        parts.append(f'<text x="{_L - 5}" y="{y + 10}" text-anchor="end" class="tick">r{s.round}</text>')
        segments = [(s.opened, s.commit_end, "#90cdf4", "commit"), (s.commit_end, s.reveal_end, "#4299e1", "reveal")]
        end = s.finalized if s.finalized is not None else max(head, s.reveal_end)
        segments.append((s.reveal_end, end, "#cbd5e0", "awaiting finalize"))
        if s.finalized is not None and s.challenge_end is not None:
            segments.append((s.finalized, s.challenge_end, _STATE_COLOR.get(s.state, _GREY), f"challenge ({s.state})"))
        for a, b, color, what in segments:
            if b < a:
                continue
            parts.append(f'<rect x="{sx(a):.1f}" y="{y + 2}" width="{max(sx(b) - sx(a), 1.5):.1f}" height="{row - 4}" '
                         f'fill="{color}"><title>round {s.round} {what}: blocks {a}-{b}</title></rect>')
    parts.append(f'<line x1="{sx(head):.1f}" y1="{_T - 4}" x2="{sx(head):.1f}" y2="{h - _B + 4}" stroke="{_RED}" '
                 f'stroke-dasharray="3,2"><title>block {head}</title></line>')
    parts.append(f'<text x="{sx(head):.1f}" y="{h - _B + 16}" text-anchor="middle" class="tick">now: {head}</text>')
    parts.append(f'<text x="{_L}" y="{h - _B + 16}" class="tick">{lo}</text>')
    return _svg("".join(parts), title, h=h)
