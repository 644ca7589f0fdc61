"""The usage chart, laid out on the server as inline SVG: no chart library, no script, no CDN.

Used by the browser UI's usage page and the tenant page of the Django admin.
"""

import math


def _nice_step(peak: float) -> int:
    """A round gridline step (1, 2 or 5 times a power of ten): at most 4 steps up to peak."""
    raw = max(peak / 4, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(int(m * power) for m in (1, 2, 5, 10) if m * power >= raw)


def usage_chart(daily: list[dict], width: int = 720, height: int = 240) -> dict:
    """Stacked bars (prompt and completion tokens) per day with gridlines, for an inline SVG.

    Laid out here so the page needs no chart library and no script (nothing from a CDN).
    """
    left, bottom, top = 56, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max((d["total_tokens"] for d in daily), default=0)
    step = _nice_step(peak) if peak else 1
    ceiling = max(step, -(-peak // step) * step)
    slot = plot_w / max(1, len(daily))
    bars = []
    for index, day in enumerate(daily):
        x = left + index * slot + slot * 0.15
        prompt_h = day["prompt_tokens"] / ceiling * plot_h
        completion_h = day["completion_tokens"] / ceiling * plot_h
        base = top + plot_h
        bars.append(
            {
                "date": day["date"],
                "tokens": day["total_tokens"],
                "title": (
                    f"{day['date']}: {fmt_count(day['total_tokens'])} tokens "
                    f"({fmt_count(day['prompt_tokens'])} prompt, "
                    f"{fmt_count(day['completion_tokens'])} completion), "
                    f"{fmt_count(day['requests'])} request{'' if day['requests'] == 1 else 's'}"
                ),
                "x": round(x, 1),
                "width": round(slot * 0.7, 1),
                "prompt_y": round(base - prompt_h, 1),
                "prompt_h": round(prompt_h, 1),
                "completion_y": round(base - prompt_h - completion_h, 1),
                "completion_h": round(completion_h, 1),
                "label": day["date"][5:] if index % 5 == 0 or index == len(daily) - 1 else "",
                "label_x": round(left + index * slot + slot / 2, 1),
            }
        )
    grid = []
    value = 0
    while value <= ceiling:
        y = round(top + plot_h - value / ceiling * plot_h, 1)
        grid.append({"value": value, "label": fmt_compact(value), "y": y})
        value += step
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - 8,
        "baseline": top + plot_h,
        "label_y": height - 8,
        "bars": bars,
        "grid": grid,
        "peak": peak,
        "peak_text": fmt_count(peak),
        "total_text": fmt_count(sum(d["total_tokens"] for d in daily)),
        "axis_x": left - 8,
    }


def fmt_count(value: int | None, none: str = "") -> str:
    """A count with thousands separators (1,234,567); ``none`` for an unset limit."""
    return none if value is None else f"{value:,}"


def fmt_compact(value: int) -> str:
    """An axis label: 950, 1.5k, 12k, 3.2M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            text = f"{value / size:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(value)
