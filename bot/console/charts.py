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


def _legend(names: Sequence[str], x: int, y: int) -> list[str]:
    out = []
    for i, name in enumerate(names):
        cx = x + i * 110
        out.append(f'<rect x="{cx}" y="{y - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{cx + 14}" y="{y}" font-size="11">{escape(name)}</text>')
    return out


def stacked_bars(label: str, categories: Sequence[str], series: dict[str, Sequence[float]],
                 width: int = 640, height: int = 220, stacked: bool = True) -> Markup:
    """Vertical bars per category, one stacked (or side-by-side) segment per series, with a legend."""
    names = list(series)
    if not stacked:
        return _side_by_side(label, categories, series, width, height)
    totals = [sum(series[n][i] for n in names) for i in range(len(categories))]
    top = max([*totals, 1])
    legend = names != [label]
    left, bottom, head = 36, 30, 24 if legend else 8
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
    if legend:
        body += _legend(names, left, 14)
    return _svg(width, height, label, body)


def _side_by_side(label: str, categories: Sequence[str], series: dict[str, Sequence[float]],
                  width: int, height: int) -> Markup:
    """One bar per series within each category."""
    names = list(series)
    top = max([v for n in names for v in series[n]] + [1])
    left, bottom, head = 36, 30, 24
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
    return _svg(width, height, label, body + _legend(names, left, 14))


def bars(label: str, categories: Sequence[str], values: Sequence[float], width: int = 640,
         height: int = 220) -> Markup:
    """Vertical bars, one series."""
    return stacked_bars(label, categories, {label: values}, width, height)


def hbars(label: str, items: Sequence[tuple[str, float]], width: int = 640, row: int = 22) -> Markup:
    """Horizontal bars, one per (name, value), largest scale first."""
    if not items:
        return Markup(f'<p class="empty">（{escape(label)}：暂无数据）</p>')
    top = max([v for _, v in items] + [1])
    left = 150
    height = row * len(items) + 6
    body = []
    for i, (name, v) in enumerate(items):
        y = 3 + i * row
        w = (width - left - 60) * v / top
        body.append(f'<text x="{left - 6}" y="{y + row * 0.65:.1f}" font-size="12" text-anchor="end">'
                    f'{escape(name)}</text><rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" '
                    f'height="{row - 8}" fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {_num(v)}</title>'
                    f'</rect><text x="{left + w + 4:.1f}" y="{y + row * 0.65:.1f}" font-size="11">{_num(v)}</text>')
    return _svg(width, height, label, body)


def grouped_hbars(label: str, groups: Sequence[tuple[str, Sequence[float]]], names: Sequence[str],
                  width: int = 640, row: int = 14) -> Markup:
    """Per group (e.g. a campaign), one horizontal bar per series (e.g. issued, redeemed, expired)."""
    if not groups:
        return Markup(f'<p class="empty">（{escape(label)}：暂无数据）</p>')
    top = max([v for _, vs in groups for v in vs] + [1])
    left, head = 150, 22
    block = row * len(names) + 10
    height = head + block * len(groups)
    body = _legend(names, left, 14)
    for g, (name, values) in enumerate(groups):
        y0 = head + g * block
        body.append(f'<text x="{left - 6}" y="{y0 + block / 2:.1f}" font-size="12" text-anchor="end">'
                    f'{escape(name)}</text>')
        for k, v in enumerate(values):
            y = y0 + k * row
            w = (width - left - 60) * v / top
            body.append(f'<rect class="bar" x="{left}" y="{y}" width="{w:.1f}" height="{row - 3}" '
                        f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(name)} {escape(names[k])}: {_num(v)}'
                        f'</title></rect><text x="{left + w + 4:.1f}" y="{y + row - 4}" font-size="10">{_num(v)}</text>')
    return _svg(width, height, label, body)


def _num(v: float) -> str:
    """1, 2.5 -> '1', '2.5'."""
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"
