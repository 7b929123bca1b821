"""Priorities (0-9, lower runs first) and the bands they are dispatched through."""

from __future__ import annotations

MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5

# Band 0 takes priorities 0-2, band 1 3-6, band 2 7-9; workers fetch them by weight 6:3:1.
BANDS: tuple[range, ...] = (range(0, 3), range(3, 7), range(7, 10))
BAND_WEIGHTS: tuple[int, ...] = (6, 3, 1)


def band_for(priority: int) -> int:
    for band, members in enumerate(BANDS):
        if priority in members:
            return band
    raise ValueError(f"priority {priority} is outside {MIN_PRIORITY}-{MAX_PRIORITY}")
