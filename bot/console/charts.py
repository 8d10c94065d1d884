"""Hand-written inline SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = ("#2f7ed8", "#f28f43", "#8bbc21", "#910000", "#1aadce", "#492970", "#77a1e5", "#c42525", "#a6c96a")


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    """Wrap chart elements in an accessible <svg>."""
    return Markup(f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
                  f'width="{width}" height="{height}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def text_width(text: str, size: float) -> float:
    """About how wide `text` renders at font size `size` (CJK full width, the rest about half)."""
    return sum(size if ord(ch) > 0x2E7F else size * 0.6 for ch in text)


def _legend(names: Sequence[str], x: int, y: int, width: int) -> tuple[list[str], int]:
    """Swatches and names from (x, y), wrapping onto further lines within `width`; the elements and the height."""
    out, cx, line = [], float(x), 0
    for i, name in enumerate(names):
        item = 14 + text_width(name, 11) + 16
        if cx > x and cx + item > width:
            cx, line = float(x), line + 1
        ly = y + line * 16
        out.append(f'<rect x="{cx:.1f}" y="{ly - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{cx + 14:.1f}" y="{ly}" font-size="11">{escape(name)}</text>')
        cx += item
    return out, (line + 1) * 16 if names else 0


def _nice(top: float) -> float:
    """A round axis maximum at or above `top` (1, 2, 5 times a power of ten)."""
    if top <= 1:
        return 1
    base = 10 ** (len(str(int(top))) - 1)
    for m in (1, 2, 5, 10):
        if m * base >= top:
            return m * base
    return 10 * base


def _clip(text: str, room: float, size: float) -> str:
    """`text`, cut with … to fit `room` pixels."""
    if text_width(text, size) <= room:
        return text
    while text and text_width(text + "…", size) > room:
        text = text[:-1]
    return text + "…"


def _label_room(names: Sequence[str], width: int, size: float = 12) -> int:
    """The left margin for row names: as wide as the longest, at most a third of the chart."""
    return int(min(width / 3, max([text_width(n, size) for n in names] + [40]) + 12))


def stacked_bars(label: str, categories: Sequence[str], series: dict[str, Sequence[float]],
                 width: int = 640, height: int = 220, stacked: bool = True) -> Markup:
    """Vertical bars per category, one stacked (or side-by-side) segment per series, with a legend."""
    names = list(series)
    if not stacked:
        return _side_by_side(label, categories, series, width, height)
    totals = [sum(series[n][i] for n in names) for i in range(len(categories))]
    top = _nice(max([*totals, 1]))
    legend = names != [label]
    keys, key_h = _legend(names, 36, 14, width) if legend else ([], 0)
    left, bottom, head = 36, 30, key_h + 16  # room for the legend and the tallest bar's value
    plot_h = height - bottom - head
    step = (width - left - 8) / max(1, len(categories))
    bar_w = max(2.0, step * 0.7)
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#999"/>',
            f'<text x="{left - 4}" y="{head + 10}" font-size="10" text-anchor="end">{_num(top)}</text>',
            f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">0</text>']
    every = max(1, len(categories) // 10)
    for i, cat in enumerate(categories):
        x = left + i * step + (step - bar_w) / 2
        y: float = height - bottom
        for k, name in enumerate(names):
            v = series[name][i]
            h = plot_h * v / top
            if v:
                y -= h
                body.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                            f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(cat)} {escape(name)}: '
                            f'{_num(v)}</title></rect>')
        if totals[i]:
            body.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" font-size="10" '
                        f'text-anchor="middle">{_num(totals[i])}</text>')
        if i % every == 0:
            body.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" font-size="10" '
                        f'text-anchor="middle">{escape(cat)}</text>')
    return _svg(width, height, label, body + keys)


def _side_by_side(label: str, categories: Sequence[str], series: dict[str, Sequence[float]],
                  width: int, height: int) -> Markup:
    """One bar per series within each category."""
    names = list(series)
    top = _nice(max([v for n in names for v in series[n]] + [1]))
    keys, key_h = _legend(names, 36, 14, width)
    left, bottom, head = 36, 30, key_h + 16
    plot_h = height - bottom - head
    step = (width - left - 8) / max(1, len(categories))
    bar_w = max(2.0, step * 0.8 / max(1, len(names)))
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#999"/>',
            f'<text x="{left - 4}" y="{head + 10}" font-size="10" text-anchor="end">{_num(top)}</text>',
            f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">0</text>']
    every = max(1, len(categories) // 10)
    for i, cat in enumerate(categories):
        x0 = left + i * step + step * 0.1
        for k, name in enumerate(names):
            v = series[name][i]
            h = plot_h * v / top
            x = x0 + k * bar_w
            if v:
                body.append(f'<rect class="bar" x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar_w:.1f}" '
                            f'height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(cat)} '
                            f'{escape(name)}: {_num(v)}</title></rect><text x="{x + bar_w / 2:.1f}" '
                            f'y="{height - bottom - h - 3:.1f}" font-size="10" text-anchor="middle">{_num(v)}</text>')
        if i % every == 0:
            body.append(f'<text x="{x0 + bar_w * len(names) / 2:.1f}" y="{height - bottom + 14}" font-size="10" '
                        f'text-anchor="middle">{escape(cat)}</text>')
    return _svg(width, height, label, body + keys)


def bars(label: str, categories: Sequence[str], values: Sequence[float], width: int = 640,
         height: int = 220) -> Markup:
    """Vertical bars, one series."""
    return stacked_bars(label, categories, {label: values}, width, height)


def hbars(label: str, items: Sequence[tuple[str, float]], width: int = 640, row: int = 22) -> Markup:
    """Horizontal bars, one per (name, value), largest scale first."""
    if not items:
        return Markup(f'<p class="empty">（{escape(label)}：暂无数据）</p>')
    top = max([v for _, v in items] + [1])
    left = _label_room([n for n, _ in items], width)
    height = row * len(items) + 6
    room = width - left - 12 - text_width(_num(top), 11)  # the top value's label stays inside
    body = []
    for i, (name, v) in enumerate(items):
        y = 3 + i * row
        w = room * v / top
        body.append(f'<text x="{left - 6}" y="{y + row * 0.65:.1f}" font-size="12" text-anchor="end">'
                    f'<title>{escape(name)}</title>{escape(_clip(name, left - 10, 12))}</text>')
        if v:
            body.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
                        f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {_num(v)}</title></rect>'
                        f'<text x="{left + w + 4:.1f}" y="{y + row * 0.65:.1f}" font-size="11">{_num(v)}</text>')
    return _svg(width, height, label, body)


def grouped_hbars(label: str, groups: Sequence[tuple[str, Sequence[float]]], names: Sequence[str],
                  width: int = 640, row: int = 14) -> Markup:
    """Per group (e.g. a campaign), one horizontal bar per series (e.g. issued, redeemed, expired)."""
    if not groups:
        return Markup(f'<p class="empty">（{escape(label)}：暂无数据）</p>')
    top = max([v for _, vs in groups for v in vs] + [1])
    left = _label_room([n for n, _ in groups], width)
    body, key_h = _legend(names, left, 14, width)
    head = key_h + 8
    block = row * len(names) + 10
    height = head + block * len(groups)
    room = width - left - 12 - text_width(_num(top), 10)
    for g, (name, values) in enumerate(groups):
        y0 = head + g * block
        body.append(f'<text x="{left - 6}" y="{y0 + block / 2:.1f}" font-size="12" text-anchor="end">'
                    f'<title>{escape(name)}</title>{escape(_clip(name, left - 10, 12))}</text>')
        if not any(values):
            body.append(f'<text x="{left}" y="{y0 + block / 2:.1f}" font-size="10" fill="#999">（均为 0）</text>')
        for k, v in enumerate(values):
            y = y0 + k * row
            w = room * v / top
            if not v:
                continue
            body.append(f'<rect class="bar" x="{left}" y="{y}" width="{w:.1f}" height="{row - 3}" '
                        f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(name)} {escape(names[k])}: {_num(v)}'
                        f'</title></rect><text x="{left + w + 4:.1f}" y="{y + row - 4}" font-size="10">{_num(v)}</text>')
    return _svg(width, height, label, body)


def _num(v: float) -> str:
    """1, 2.5 -> '1', '2.5'."""
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"
