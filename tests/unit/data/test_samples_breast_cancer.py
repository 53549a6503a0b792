"""The breast_cancer sample dealt over days: a day holds the same rows whichever window wrote it."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipelines.data.samples import write_sample
from pipelines.settings import get_settings


def _days(settings, end: dt.date) -> dict[str, pd.DataFrame]:
    return {
        uri.rsplit("/", 1)[-1]: pd.read_csv(uri) for uri in write_sample(settings, "breast_cancer", end, 4)
    }


def test_a_window_one_day_later_rewrites_no_day_and_repeats_no_sample_in_a_window(tmp_path):
    """Dealt by their place in the window, a window one day later gave every day other rows (0 of 189 shared
    with the first write) and put 190 samples on two days."""
    import os

    settings = get_settings(state_dir=tmp_path / "state", dataset="breast_cancer")
    first = _days(settings, dt.date(2026, 11, 20))
    stamps = {
        uri: os.stat(uri).st_mtime_ns
        for uri in write_sample(settings, "breast_cancer", dt.date(2026, 11, 20), 4)
    }
    later = _days(settings, dt.date(2026, 11, 21))
    shared = sorted(set(first) & set(later))
    assert len(shared) == 3
    for day in shared:
        assert first[day]["sample_id"].tolist() == later[day]["sample_id"].tolist(), day
    for window in (first, later):
        ids = pd.concat([frame["sample_id"] for frame in window.values()])
        assert ids.is_unique and len(ids) == 569  # every sample once in any 4 days in a row
    again = write_sample(settings, "breast_cancer", dt.date(2026, 11, 20), 4)
    assert [os.stat(uri).st_mtime_ns for uri in again[:3]] == [stamps[uri] for uri in again[:3]]
