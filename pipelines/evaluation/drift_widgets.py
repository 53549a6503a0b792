"""Evidently's ``ValueDrift`` as the drift reports draw it from a profile's rendering.

A report's rows are a rendering of each profile (:func:`pipelines.data.profile.reference_frame`): values drawn
from the buckets, in a random order. Evidently's ``ValueDrift`` draws two tabs per numeric column: the two
distributions, and the current rows' mean over their index against the reference's mean and spread. On a
rendering the second is a plot of that random order, a flat line of noise named "Index binned", which read as
the column's course over the interval; it was also a quarter of the monitor's report time (about 70 of
270 ms, 8 features, 2026-12-05). ``ProfileValueDrift`` is ``ValueDrift`` in all else (Evidently's calculation,
score, test and distribution widget), named apart in the report's JSON so that no one takes its widget for
Evidently's own. Evidently's ``ValueDrift`` itself is left as it is.
"""

from __future__ import annotations

from typing import Any

from evidently.core.metric_types import SingleValueCalculation
from evidently.metrics.column_statistics import ValueDrift, ValueDriftCalculation


class ProfileValueDrift(ValueDrift):
    """``ValueDrift`` of a column of a profile's rendering: its distributions, not its rows' order."""

    class Config:
        type_alias = "ct:metric:ProfileValueDrift"


class ProfileValueDriftCalculation(SingleValueCalculation[ProfileValueDrift]):
    calculate = ValueDriftCalculation.calculate
    display_name = ValueDriftCalculation.display_name

    def _render(self, result: Any, options: Any, color_options: Any) -> Any:
        result.scatter = None  # the rendering's row order: no course over time to draw
        return ValueDriftCalculation._render(self, result, options, color_options)
