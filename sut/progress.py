"""The one progress bar of the harness (tqdm on stderr): pre-processing, samples answered."""

from __future__ import annotations


def progress_bar(total: int | None, description: str, unit: str, enabled: bool):
    """total None: a running count (a performance run, whose length LoadGen decides)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=not enabled,
                mininterval=0.5, dynamic_ncols=True)
