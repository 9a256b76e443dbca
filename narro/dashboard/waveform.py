"""A clip's waveform as a small inline SVG: the min and max of each column, drawn as one filled shape."""

from __future__ import annotations

import numpy as np

from narro.encode import decode

SAMPLE_RATE = 8000  # plenty for a picture; decoding at this rate is cheap
COLUMNS = 600
HEIGHT = 80


def envelope(samples: np.ndarray, columns: int = COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Per-column minimum and maximum of mono PCM, `columns` wide (fewer for very short audio)."""
    if samples.size == 0:
        return np.zeros(1), np.zeros(1)
    columns = max(1, min(columns, samples.size))
    edges = np.linspace(0, samples.size, columns + 1).astype(int)
    lows = np.minimum.reduceat(samples, edges[:-1])
    highs = np.maximum.reduceat(samples, edges[:-1])
    return np.clip(lows, -1, 1), np.clip(highs, -1, 1)


def svg(lows: np.ndarray, highs: np.ndarray, duration_s: float, label: str) -> str:
    """SVG markup with a faint line every few seconds; `label` must already be escaped by the caller."""
    width, middle = len(highs), HEIGHT / 2
    top = " ".join(f"{x},{middle - high * middle:.1f}" for x, high in enumerate(highs))
    bottom = " ".join(f"{x},{middle - low * middle:.1f}" for x, low in reversed(list(enumerate(lows))))
    ticks = []
    if duration_s > 0:
        step = next(s for s in (1, 2, 5, 10, 30, 60, 120, 300, 600) if duration_s / s <= 12)
        for second in np.arange(step, duration_s, step):
            x = second / duration_s * width
            ticks.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{HEIGHT}" class="tick"/>')
    return (
        f'<svg class="waveform" viewBox="0 0 {width} {HEIGHT}" preserveAspectRatio="none" role="img" '
        f'aria-label="{label}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="0" y1="{middle}" x2="{width}" y2="{middle}" class="axis"/>{"".join(ticks)}'
        f'<polygon points="{top} {bottom}" class="wave"/></svg>'
    )


def waveform_svg(mp3: bytes, label: str) -> str:
    samples = decode(mp3, SAMPLE_RATE)
    lows, highs = envelope(samples)
    return svg(lows, highs, samples.size / SAMPLE_RATE, label)
