"""The demo days the tests use. Here, not in conftest.py: a module that imports ``tests.conftest`` runs it a
second time (pytest loads it as ``conftest``), which made a second Airflow home and pointed AIRFLOW_HOME at it
halfway through the session."""

from __future__ import annotations

import datetime as dt

DAY = dt.date(2026, 11, 20)
NEXT_DAY = dt.date(2026, 11, 21)
