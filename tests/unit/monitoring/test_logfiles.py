"""The prediction log's compaction: the app's file per flush into a file per closed hour, every row read once."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.monitoring import logfiles
from pipelines.serving.predlog import LOG_COLUMNS

DAY = dt.date(2026, 11, 30)
HOUR = dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)


def _part(folder: Path, written: dt.datetime, rows: int, first: int, extra: bool = False) -> Path:
    """A file as the app writes it: named by when its flush began, rows served up to 10 s before."""
    ns = int(written.timestamp() * 10**9)
    served = pd.date_range(written - dt.timedelta(seconds=10), periods=rows, freq="100ms", tz="UTC")
    columns = {
        "served_at": pa.array(served.to_numpy(), LOG_COLUMNS["served_at"]),
        "model_name": pa.array(["ct-transactions"] * rows),
        "model_version": pa.array([3] * rows, pa.int64()),
        "request_id": pa.array([f"r{first + i}" for i in range(rows)]),
        "probability": pa.array([(first + i) / 1000 for i in range(rows)], pa.float64()),
    }
    if extra:  # a replica of a later app version writes a column more
        columns["entity_id"] = pa.array([f"c{first + i}" for i in range(rows)])
    path = folder / f"part-{ns}-{ns % 0xFFFFFFFF:08x}.parquet"
    pq.write_table(pa.table(columns), path, compression="zstd")
    return path


def _rows(files: list[str]) -> pd.DataFrame:
    frames = [pq.read_table(f.removeprefix("file://")).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True).sort_values("request_id").reset_index(drop=True)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    found = tmp_path / "log" / f"ds={DAY}"
    found.mkdir(parents=True)
    first = 0
    for minute, extra in [
        (1, False),
        (20, False),
        (59, False),
        (30, True),
        (61, False),
        (90, False),
        (121, False),
    ]:
        _part(found, HOUR + dt.timedelta(minutes=minute, seconds=7), 5, first, extra)
        first += 5
    pq.write_table(pa.table({"served_at": pa.array([], LOG_COLUMNS["served_at"])}), found / "other.parquet")
    return found


def test_closed_hours_become_one_file_per_hour_and_schema_and_every_row_is_read_once(folder):
    log_uri = str(folder.parent)
    before = _rows(logfiles.log_files(str(folder)))
    # 12:01: hour 11 ended less than SETTLE ago, its parts may not all be in place: only hour 10 is closed.
    early = logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=2, minutes=1))
    assert early == {"files": 2, "parts": 4, "rows": 20, "removed": 4, "skipped": 0, "set_aside": []}
    # 12:03: hour 11 is closed too, hour 12 is not.
    done = logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=2, minutes=3))
    assert done == {"files": 1, "parts": 2, "rows": 10, "removed": 2, "skipped": 0, "set_aside": []}
    names = sorted(p.name for p in folder.iterdir())
    hour_10 = int((HOUR + dt.timedelta(hours=1)).timestamp() * 10**9) - 1
    hour_11 = hour_10 + 3600 * 10**9
    assert [n.split("-")[1] for n in names if n.startswith("compacted-")] == [str(hour_10)] * 2 + [
        str(hour_11)
    ]
    assert len([n for n in names if n.startswith("part-")]) == 1 and "other.parquet" in names
    files = logfiles.log_files(str(folder))
    after = _rows(files)
    pd.testing.assert_frame_equal(after, before)  # the same rows, values and types; the new column's nulls
    assert logfiles.written_ns(next(f for f in files if str(hour_10) in f)) == hour_10

    # Run again: nothing to do.
    assert logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=2, minutes=3)) == dict.fromkeys(
        ("files", "parts", "rows", "removed", "skipped"), 0
    ) | {"set_aside": []}
    assert sorted(p.name for p in folder.iterdir()) == names


def test_a_part_named_by_a_compacted_file_is_not_read_and_a_late_part_stays_a_part(folder, tmp_path):
    log_uri = str(folder.parent)
    before = _rows(logfiles.log_files(str(folder)))
    kept = tmp_path / "kept"
    shutil.copytree(folder, kept)
    logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=1, minutes=3))  # hour 10 only
    manifests = [
        json.loads(pq.read_metadata(p).metadata[logfiles.PARTS_KEY.encode()])
        for p in folder.iterdir()
        if p.name.startswith("compacted-")
    ]
    assert sorted(len(parts) for parts in manifests) == [1, 3]  # hour 10, in two schemas
    listed = max(manifests, key=len)[0]
    # A compaction that stopped between its file's rename and its parts' removal: the part is back.
    shutil.copy(kept / listed, folder / listed)
    assert _rows(logfiles.log_files(str(folder))).equals(before)
    # A part of hour 10 written after it was compacted (a clock further off than SETTLE): read, kept a part.
    late = _part(folder, HOUR + dt.timedelta(minutes=58), 3, 1000)
    done = logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=1, minutes=3))
    assert done == {"files": 0, "parts": 0, "rows": 0, "removed": 1, "skipped": 0, "set_aside": []}
    assert not (folder / listed).exists() and late.exists()
    assert len(_rows(logfiles.log_files(str(folder)))) == len(before) + 3


def test_a_compacted_files_footer_is_read_once_by_a_compaction_and_the_listings_after_it(folder, monkeypatch):
    opened: list[str] = []
    footer = logfiles.parquet_footer

    def counted(uri: str):
        opened.append(uri)
        return footer(uri)

    monkeypatch.setattr(logfiles, "parquet_footer", counted)
    logfiles.compact(str(folder.parent), DAY, HOUR + dt.timedelta(hours=2, minutes=3))
    compacted = sorted(str(p) for p in folder.iterdir() if p.name.startswith("compacted-"))
    assert len(compacted) == 3
    before = len(opened)  # the parts' schemas, read to group them
    logfiles.compact(str(folder.parent), DAY, HOUR + dt.timedelta(hours=2, minutes=3))  # nothing left to do
    files = logfiles.log_files(str(folder))
    logfiles.log_files(str(folder))
    assert len(opened) == before + 3  # the second compaction's listing read each footer; nothing after it
    assert sorted(uri.removeprefix("file://") for uri in opened[before:]) == compacted
    assert len(_rows(files)) == 35


def test_a_file_named_as_compacted_without_its_list_of_parts_is_refused(folder):
    bad = folder / f"compacted-{int(HOUR.timestamp() * 10**9) - 1}-00000000-00000000.parquet"
    pq.write_table(pa.table({"served_at": pa.array([], LOG_COLUMNS["served_at"])}), bad)
    with pytest.raises(ValueError, match="lists no parts"):
        logfiles.log_files(str(folder))


def test_two_compactions_at_once_leave_every_row_read_once(folder, tmp_path):
    """Compaction A lists hour 10's parts; a late part arrives; compaction B lists them all, writes its file
    and removes the parts; A's rename lands after B's."""
    log_uri = str(folder.parent)
    at = HOUR + dt.timedelta(hours=1, minutes=3)
    earlier = tmp_path / "earlier" / f"ds={DAY}"
    shutil.copytree(folder, earlier)
    logfiles.compact(str(earlier.parent), DAY, at)  # A, on what it listed
    _part(folder, HOUR + dt.timedelta(minutes=59, seconds=55), 4, 2000)  # the late part, before B lists
    before = _rows(logfiles.log_files(str(folder)))
    logfiles.compact(log_uri, DAY, at)  # B
    for made in earlier.glob("compacted-*"):  # A's rename, after B's
        shutil.copy(made, folder / made.name)
    assert len(list(folder.glob("compacted-*"))) == 4  # hour 10 in two schemas, by A and by B
    pd.testing.assert_frame_equal(_rows(logfiles.log_files(str(folder))), before)
    done = logfiles.compact(log_uri, DAY, at)  # A's files hold nothing B's do not: removed
    assert done == {"files": 0, "parts": 0, "rows": 0, "removed": 2, "skipped": 0, "set_aside": []}
    pd.testing.assert_frame_equal(_rows(logfiles.log_files(str(folder))), before)
    assert len(list(folder.glob("compacted-*"))) == 2


def test_a_compaction_whose_parts_were_taken_beside_it_writes_nothing(folder):
    parts = sorted(str(p) for p in folder.glob("part-*"))[:3]
    Path(parts[1]).unlink()  # removed by a compaction beside this one, after this one listed it
    target = str(folder / "compacted-1795000000000000000-00000000-00000000.parquet")
    assert logfiles._write(target, parts) is None
    assert not list(folder.glob("compacted-*")) and len(list(folder.glob("part-*"))) == 6


def test_the_monitor_compacts_its_interval_the_day_before_and_the_labels_day(settings):
    from pipelines.monitoring.monitor import Interval, _compact_log

    log = Path(settings.prediction_log_uri)
    days = [DAY - dt.timedelta(days=offset) for offset in range(4)]  # the interval's, before, labels', other
    for day in days:
        folder = log / f"ds={day}"
        folder.mkdir(parents=True)
        _part(folder, dt.datetime.combine(day, dt.time(10, 5), dt.UTC), 5, 0)
    interval = Interval.of(DAY, 10)
    done = _compact_log(settings, interval, live_day=days[2])
    assert done == {
        "files": 3,
        "parts": 3,
        "rows": 15,
        "removed": 3,
        "skipped": 0,
        "set_aside": [],
        "failed": [],
    }
    compacted = {
        day: any(p.name.startswith("compacted-") for p in (log / f"ds={day}").iterdir()) for day in days
    }
    assert compacted == {days[0]: True, days[1]: True, days[2]: True, days[3]: False}


def _cut_short(path: Path) -> bytes:
    """Cut a file to half its bytes, as a writer's crash before its bytes reached the disk leaves it; the whole
    bytes it had."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return whole[: len(whole) // 2]


def test_a_part_cut_short_is_set_aside_with_a_note_and_the_rest_is_compacted(folder):
    log_uri = str(folder.parent)
    parts = sorted(folder.glob("part-*"))
    bad = parts[1]  # hour 10
    kept = _cut_short(bad)
    rows = len(_rows([str(p) for p in parts if p != bad]))
    done = logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=2, minutes=3))
    aside = folder.parent / "_unreadable" / f"ds={DAY}" / bad.name
    assert done["set_aside"] == [f"file://{aside}"] and done["parts"] == 5
    assert aside.read_bytes() == kept and not bad.exists()
    note = json.loads(Path(f"{aside}.json").read_text())
    assert note["file"] == f"file://{bad}" and "no Parquet footer" in note["reason"]
    assert len(_rows(logfiles.log_files(str(folder)))) == rows == 30
    again = logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=2, minutes=3))
    assert again["set_aside"] == [] and aside.exists()


def test_a_compacted_file_whose_footer_does_not_parse_is_set_aside(folder):
    log_uri = str(folder.parent)
    logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=1, minutes=3))  # hour 10, in two schemas
    made = sorted(folder.glob("compacted-*"))
    whole = made[0].read_bytes()
    made[0].write_bytes(whole[:-12] + bytes(8) + whole[-4:])  # the footer's last bytes and length overwritten
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        logfiles.log_files(str(folder))
    done = logfiles.compact(log_uri, DAY, HOUR + dt.timedelta(hours=1, minutes=3))
    assert done["set_aside"] == [f"file://{folder.parent / '_unreadable' / f'ds={DAY}' / made[0].name}"]
    assert not made[0].exists() and len(_rows(logfiles.log_files(str(folder)))) > 0


def test_a_part_whose_data_does_not_decode_is_set_aside_and_the_rest_of_its_hour_compacted(folder):
    """Its footer parses (so the hour is grouped), its page does not: before, the compaction of its hour failed
    on every run, and a closed day read whole (the labels' day) failed the monitor too."""
    parts = sorted(folder.glob("part-*"))
    bad = parts[1]  # hour 10
    whole = bad.read_bytes()
    footer = pq.read_metadata(bad)
    chunk = footer.row_group(0).column(footer.schema.names.index("request_id"))
    damaged = bytearray(whole)
    damaged[chunk.data_page_offset : chunk.data_page_offset + 40] = bytes(40)
    bad.write_bytes(bytes(damaged))
    done = logfiles.compact(str(folder.parent), DAY, HOUR + dt.timedelta(hours=2, minutes=3))
    aside = folder.parent / "_unreadable" / f"ds={DAY}" / bad.name
    assert done["set_aside"] == [f"file://{aside}"] and done["parts"] == 5 and done["rows"] == 25
    assert aside.read_bytes() == bytes(damaged) and not bad.exists()
    assert "does not decode" in json.loads(Path(f"{aside}.json").read_text())["reason"]
    assert len(_rows(logfiles.log_files(str(folder)))) == 30
