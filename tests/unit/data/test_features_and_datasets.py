import datetime as dt
import zlib

import numpy as np
import pandas as pd
import pytest

from pipelines.data import datasets, storage
from pipelines.data.features import assign_split, build_features, feature_matrix, feature_names, split_bucket


def test_feature_matrix_follows_the_contract(clean_frame, contract):
    features = feature_matrix(clean_frame, contract)
    assert list(features.columns) == feature_names(contract)
    assert (features.dtypes == "float64").all()
    one_hot = features[[c for c in features if c.startswith("f_channel__")]]
    assert (one_hot.sum(axis=1) == 1).all()
    assert np.allclose(features["f_amount"], np.log1p(clean_frame["amount"]))


def test_nulls_become_zero_with_an_indicator(clean_frame, contract):
    frame = clean_frame.head(3).copy()
    frame.loc[0, "avg_basket"] = np.nan
    features = feature_matrix(frame, contract)
    assert features.loc[0, "f_avg_basket"] == 0.0 and features.loc[0, "f_avg_basket__missing"] == 1.0
    assert features.loc[1, "f_avg_basket__missing"] == 0.0


def test_split_is_a_stable_hash_of_the_entity(contract):
    ids = pd.Series([f"C{i:07d}" for i in range(20_000)])
    buckets = split_bucket(ids)
    assert buckets.iloc[0] == zlib.crc32(b"C0000000") % 100
    split = assign_split(buckets, contract)
    shares = split.value_counts(normalize=True)
    assert abs(shares["train"] - 0.70) < 0.02 and abs(shares["holdout"] - 0.15) < 0.02
    pd.testing.assert_series_equal(split, assign_split(split_bucket(ids), contract))


def test_build_features_keeps_keys_label_and_split(clean_frame, contract):
    prepared = build_features(clean_frame, contract)
    assert {"customer_id", "event_ts", "churned", "split"} <= set(prepared.columns)
    assert prepared.groupby("customer_id")["split"].nunique().max() == 1


def test_content_hash_ignores_row_order_and_files(tmp_path):
    frame = pd.DataFrame({"a": range(100), "b": [f"x{i}" for i in range(100)]})
    one = datasets.write_parquet_frame(frame, str(tmp_path / "one"))
    two_dir = tmp_path / "two"
    two_dir.mkdir()
    frame.iloc[::-1].iloc[:50].to_parquet(two_dir / "p1.parquet", index=False)
    frame.iloc[::-1].iloc[50:].to_parquet(two_dir / "p2.parquet", index=False)
    assert datasets.content_hash(str(two_dir)).digest == one.content_hash
    changed = frame.assign(a=frame["a"].where(frame["a"] != 5, 6))
    assert datasets.write_parquet_frame(changed, str(tmp_path / "three")).content_hash != one.content_hash


def _split_folder(root, cuts: list[pd.DataFrame]) -> datasets.Manifest:
    """A dataset of one split, ``split=train``, written as one file per cut, and its manifest."""
    folder = root / "split=train"
    folder.mkdir(parents=True)
    for number, cut in enumerate(cuts):
        cut.to_parquet(folder / f"part-{number:05d}.parquet", index=False)
    return datasets.write_manifest(str(root), ordered=["split=train", "split=validation"])


def test_a_split_s_row_order_is_its_rows_sequence_however_the_files_cut_it(tmp_path):
    """Training takes a split's rows in its files' order; engines write the same rows in other orders, which
    train other models. The order's digest follows the sequence alone, not the file cut, nor the content hash."""
    frame = pd.DataFrame({"a": range(200_000), "b": [f"x{i % 97}" for i in range(200_000)]})
    one = _split_folder(tmp_path / "one", [frame])
    # three files, one of them cut across the reader's 65,536-row batches
    cut = _split_folder(tmp_path / "cut", [frame.iloc[:7], frame.iloc[7:150_001], frame.iloc[150_001:]])
    swapped = frame.copy()
    swapped.iloc[[10, 11]] = swapped.iloc[[11, 10]].to_numpy()  # two neighbours change places
    other = _split_folder(tmp_path / "other", [swapped])
    tail_first = _split_folder(tmp_path / "tail_first", [frame.iloc[150_001:], frame.iloc[:150_001]])
    assert one.content_hash == cut.content_hash == other.content_hash == tail_first.content_hash
    assert one.row_order["split=train"] == cut.row_order["split=train"]
    assert len({m.row_order["split=train"] for m in (one, other, tail_first)}) == 3
    assert one.row_order["split=validation"] == datasets.row_order([])  # no such folder: no rows
    assert datasets.read_manifest(str(tmp_path / "cut")).row_order == cut.row_order


def test_atomic_dir_keeps_the_old_version_when_a_write_fails(tmp_path):
    target = str(tmp_path / "ds")
    datasets.write_parquet_frame(pd.DataFrame({"a": [1, 2]}), target)
    with pytest.raises(RuntimeError), storage.atomic_dir(target) as tmp:
        pd.DataFrame({"a": [9]}).to_parquet(f"{tmp}/part.parquet")
        raise RuntimeError("crash mid-write")
    assert datasets.read_parquet(target)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_two_writers_of_one_folder_at_once_leave_one_whole_version(tmp_path, monkeypatch):
    """Two runs of one day at once (a backfill beside the schedule): B committed between A's two renames, and A's
    rename (shutil.move) put A's folder inside B's. Readers took both versions' files, the day's rows twice,
    under one manifest, and nothing tidied the nested copy. Now A's rename fails and A swaps again, whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = str(tmp_path / "ds=2026-11-20")
    datasets.write_parquet_frame(pd.DataFrame({"id": [0]}), uri)  # the committed version both replace

    def write(tmp: str, first: int) -> None:
        pq.write_table(pa.table({"id": list(range(first, first + 10))}), storage.join(tmp, "part-0.parquet"))
        datasets.write_manifest(tmp, final_uri=uri)

    a, b = storage.atomic_dir(uri), storage.atomic_dir(uri)
    write(a.__enter__(), 0)
    write(b.__enter__(), 100)
    real, interleaved = storage._move_folder, []

    def move(fs, source: str, target: str) -> None:
        real(fs, source, target)
        if not interleaved and source.rstrip("/") == uri:  # A moved the committed version aside: B commits
            interleaved.append(target)
            b.__exit__(None, None, None)

    monkeypatch.setattr(storage, "_move_folder", move)
    a.__exit__(None, None, None)
    assert interleaved
    assert sorted(datasets.read_parquet(uri)["id"]) == list(range(10))  # A's, the last writer's, alone
    assert datasets.read_manifest(uri).rows == 10
    assert not [p for p in (tmp_path / "ds=2026-11-20").iterdir() if p.is_dir()]  # nothing nested
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds=2026-11-20"]  # nothing left beside it


def _left_by_a_write(folder, modified: float | None, files: tuple[str, ...]):
    """A folder a write left: ``files`` (each holding the folder's name), last changed at ``modified``."""
    import os

    for file in files:
        path = folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(folder.name.encode())
        if modified is not None:
            os.utime(path, (modified, modified))
    return folder


def test_a_folder_write_tidies_what_killed_writes_left_beside_it_once_it_is_a_day_old(tmp_path, caplog):
    """A prepare killed by the out-of-memory killer left its features, gigabytes, under a temporary name for
    good, and a swap killed between its two renames left readers without the day. A write still under way (a
    file changed within the day, or a swap that started within it) is left alone."""
    import os
    import time

    day_ago = time.time() - storage.STALE_WRITE.total_seconds() - 60

    def left(name: str, old: bool, files: tuple[str, ...] = ("split=train/part-0.parquet", "_manifest.json")):
        return _left_by_a_write(tmp_path / name, day_ago if old else None, files)

    killed = left("ds=2026-11-18.__tmp-0a1b2c3d", old=True)
    # Cut between a swap's two renames, twice: the newer old version is put back, the older removed.
    cut = left(f"ds=2026-11-17.__old-{int(day_ago)}-1a2b3c4d", old=True)
    cut_before = left(f"ds=2026-11-17.__old-{int(day_ago) - 86_400}-0a2b3c4d", old=True)
    replaced = left(f"ds=2026-11-16.__old-{int(day_ago)}-2a2b3c4d", old=True)  # beside its name: removed
    unnamed = left("ds=2026-11-15.__old-4a5b6c7d", old=True)  # no time in its name (older code): its files
    # Moved aside a moment ago by a write beside this one, whose next step removes it: its files are old.
    swapping = left(f"ds=2026-11-14.__old-{int(time.time())}-5a6b7c8d", old=True)
    digits = left(
        "ds=2026-11-13.__old-12345678", old=False
    )  # an older writer's token, all digits: not a time
    running = left("ds=2026-11-19.__tmp-2a3b4c5d", old=True, files=("a.parquet", "b.parquet"))
    os.utime(running / "b.parquet")  # written a moment ago: its writer is at work
    committed = left("ds=2026-11-16", old=True)
    file_left = tmp_path / "notes.json.__tmp-3a4b5c6d"
    file_left.write_text("{}")
    os.utime(file_left, (day_ago, day_ago))
    with caplog.at_level("WARNING", logger="pipelines.data.storage"):
        datasets.write_parquet_frame(pd.DataFrame({"a": [1, 2]}), str(tmp_path / "ds=2026-11-20"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            digits.name,
            swapping.name,
            *(f"ds=2026-11-{day}" for day in (15, 16, 17)),
            running.name,
            "ds=2026-11-20",
        ]
    )
    assert (tmp_path / "ds=2026-11-17" / "_manifest.json").read_bytes() == cut.name.encode()
    assert (tmp_path / "ds=2026-11-15" / "_manifest.json").read_bytes() == unnamed.name.encode()
    assert (committed / "_manifest.json").read_bytes() == committed.name.encode()
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert all(path.name in warned for path in (killed, cut, cut_before, replaced, unnamed, file_left))


def test_tidying_beside_a_write_never_fails_the_write(tmp_path, caplog, monkeypatch):
    """A leftover another sweep (a backfill's other days) took first, or a storage error: logged, the write
    that committed before it stands."""
    import os
    import time

    from fsspec.implementations.local import LocalFileSystem

    leftover = tmp_path / "ds=2026-11-18.__tmp-0a1b2c3d"
    leftover.mkdir()
    (leftover / "part-0.parquet").write_bytes(b"x")
    day_ago = time.time() - storage.STALE_WRITE.total_seconds() - 60
    os.utime(leftover / "part-0.parquet", (day_ago, day_ago))

    def taken(self, path, recursive=False, maxdepth=None):
        raise FileNotFoundError(path)

    monkeypatch.setattr(LocalFileSystem, "rm", taken)
    with caplog.at_level("WARNING", logger="pipelines.data.storage"):
        datasets.write_parquet_frame(pd.DataFrame({"a": [1, 2]}), str(tmp_path / "ds=2026-11-20"))
    assert datasets.read_parquet(str(tmp_path / "ds=2026-11-20"))["a"].tolist() == [1, 2]
    assert f"left {leftover}: FileNotFoundError" in caplog.text


@pytest.fixture
def object_store(monkeypatch):
    """fsspec's memory filesystem: as an object store, it has no rename and moves a folder object by object.
    ``copies`` lists each object a folder move copied; ``fail_at(n)`` kills the n-th (a writer killed
    mid-move)."""
    import uuid

    from fsspec.implementations.memory import MemoryFileSystem

    copies: list[str] = []
    kill = {"at": None}
    real = MemoryFileSystem.cp_file

    def cp_file(self, path1, path2, **kwargs):
        name = path1.rsplit("/", 1)[1]
        moved = ".__" in path1.rsplit("/", 1)[0] or ".__" in path2.rsplit("/", 1)[0]
        if moved and ".__" not in name:  # a folder moved into place or aside, not a file's own rename
            copies.append(name)
            if kill["at"] is not None and len(copies) == kill["at"]:
                raise ConnectionError("the writer died mid-move")
        return real(self, path1, path2, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "cp_file", cp_file)
    root = f"memory://ct-{uuid.uuid4().hex[:8]}"
    yield root, copies, lambda n: kill.update(at=n)
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


def _three_files(uri: str, value: int) -> None:
    """A committed folder of three data files, two of them in a split's folder, and its manifest."""
    with storage.atomic_dir(uri) as tmp:
        for name in (
            "split=holdout/part-0.parquet",
            "split=train/part-0.parquet",
            "split=train/part-1.parquet",
        ):
            with storage.open_write(storage.join(tmp, name)) as fh:
                pd.DataFrame({"a": [value]}).to_parquet(fh)
        datasets.write_manifest(tmp, final_uri=uri)


def test_on_an_object_store_a_folder_reads_as_committed_only_once_every_file_is_in(object_store):
    """fsspec moves a folder on an object store by copying its objects in name order, and ``_manifest.json``
    sorts first: a reader (or a write killed half way) saw a committed folder with files missing."""
    root, copies, fail_at = object_store
    uri = f"{root}/features/ds=2026-11-20"
    _three_files(uri, 1)
    assert copies[-1] == "_manifest.json" and len(copies) == 4
    assert len(datasets.parquet_files(uri)) == 3
    fail_at(len(copies) + 3)  # the next write dies on its third copy into place
    with pytest.raises(ConnectionError):
        _three_files(f"{root}/features/ds=2026-11-21", 2)
    with pytest.raises(datasets.DatasetNotFoundError):
        datasets.parquet_files(f"{root}/features/ds=2026-11-21")


def test_on_an_object_store_a_replaced_version_is_never_read_half_gone(object_store):
    """The version being replaced stops reading as committed before any of its files is removed; a swap killed
    while the new version was copied in is undone by the next write beside it, a day later."""
    root, copies, fail_at = object_store
    uri = f"{root}/features/ds=2026-11-20"
    _three_files(uri, 1)
    fail_at(len(copies) + 4 + 3)  # moving the old version aside takes 4 copies; die on the new one's third
    with pytest.raises(ConnectionError):
        _three_files(uri, 2)
    with pytest.raises(datasets.DatasetNotFoundError):  # what was copied in is not a committed folder
        datasets.parquet_files(uri)
    fail_at(None)
    with pytest.MonkeyPatch.context() as later:
        later.setattr(storage, "STALE_WRITE", dt.timedelta(seconds=-3600))  # as if a day had passed
        _three_files(f"{root}/features/ds=2026-11-21", 3)
    assert len(datasets.parquet_files(uri)) == 3
    assert datasets.read_parquet(uri)["a"].tolist() == [1, 1, 1]  # the old version, whole
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(f"{root}/features")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == [
        "ds=2026-11-20",
        "ds=2026-11-21",
    ]


def test_uncommitted_folder_is_not_read(tmp_path):
    (tmp_path / "half").mkdir()
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "half" / "part.parquet")
    with pytest.raises(datasets.DatasetNotFoundError, match="no _manifest.json"):
        datasets.read_parquet(str(tmp_path / "half"))


def test_the_newest_days_can_be_the_holdout_and_are_never_trained_on(clean_frame, contract):
    import datetime as dt

    from pipelines.data.features import holdout_start

    frame = clean_frame.copy()
    day = pd.Timestamp(frame["event_ts"].iloc[0]).normalize()
    frame["event_ts"] = [day - pd.Timedelta(days=i % 4) for i in range(len(frame))]
    start = holdout_start(day.date(), 2, window_days=7)
    assert start == day.date() - dt.timedelta(days=1)
    prepared = build_features(frame, contract, start)
    newest = pd.to_datetime(prepared["event_ts"], utc=True) >= pd.Timestamp(start, tz="UTC")
    assert (prepared.loc[newest, "split"] == "holdout").all()
    assert set(prepared.loc[~newest, "split"]) == {"train", "validation"}
    shares = prepared.loc[~newest, "split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.70 / 0.85) < 0.05  # the contract's proportion of train to validation
    from pipelines.cli.common import request_errors
    from pipelines.data.features import HoldoutWindowError

    with pytest.raises(HoldoutWindowError, match="leaves nothing to train on in a 7-day window") as caught:
        holdout_start(day.date(), 7, window_days=7)
    assert isinstance(caught.value, request_errors())  # the CLI's exit 2 with the message, not a traceback


def test_a_split_no_row_fell_into_counts_zero_and_reads_as_a_named_error(tmp_path, clean_frame):
    from pipelines.data.prepare import _split_rows

    uri = str(tmp_path / "features")
    (tmp_path / "features" / "split=train").mkdir(parents=True)
    clean_frame.head(20).to_parquet(tmp_path / "features" / "split=train" / "part-0.parquet", index=False)
    datasets.write_manifest(uri)
    assert _split_rows(storage.split_uri(uri, "train")) == 20
    assert _split_rows(storage.split_uri(uri, "holdout")) == 0  # no folder: the writer made none
    assert len(datasets.read_split(uri, "train")) == 20
    with pytest.raises(datasets.EmptySplitError, match=r"the holdout split of .*features has no rows"):
        datasets.read_split(uri, "holdout")


def test_the_tidying_leaves_a_name_alone_while_a_write_of_it_is_under_way(tmp_path):
    """A stale old version beside no name, while another write of that name had moved its own version aside
    and was copying the new one in (an object store copies file by file): restoring it mixed two versions in
    one folder. A committed old version beside a name not committed yet (a restore under way) is kept."""
    import time

    day_ago = time.time() - storage.STALE_WRITE.total_seconds() - 60

    def left(name: str, old: bool, files=("part-0.parquet", "_manifest.json")):
        return _left_by_a_write(tmp_path / name, day_ago if old else None, files)

    stale = left(f"ds=2026-11-17.__old-{int(day_ago)}-1a2b3c4d", old=True)
    left("ds=2026-11-17.__tmp-0a0b0c0d", old=False)  # the write under way: its new version, being written
    restoring = left(f"ds=2026-11-16.__old-{int(day_ago)}-2a2b3c4d", old=True)
    left("ds=2026-11-16", old=False, files=("part-0.parquet",))  # a restore of it under way: no manifest yet
    datasets.write_parquet_frame(pd.DataFrame({"a": [1]}), str(tmp_path / "ds=2026-11-20"))
    assert stale.exists() and not (tmp_path / "ds=2026-11-17").exists()
    assert restoring.exists() and (restoring / "_manifest.json").exists()


def test_a_prepared_hash_covers_the_rows_not_the_features_computed_from_them(tmp_path, clean_frame, contract):
    """The prepared manifest hashed its float features, whose last bits follow the CPU (numpy's log1p under its
    AVX-512 and baseline kernels): the same rows prepared on two workers had two hashes."""
    import numpy as np

    from pipelines.data import datasets
    from pipelines.data.features import build_features, feature_names

    prepared = build_features(clean_frame, contract)
    features = feature_names(contract)
    kept = [name for name in sorted(prepared.columns) if name not in set(features)]
    assert kept and "f_amount" in features and "amount" in kept and "split" in kept

    def hashed(frame, name):
        datasets.write_parquet_frame(frame, str(tmp_path / name))
        return datasets.content_hash(str(tmp_path / name), kept).digest

    other_cpu = prepared.assign(f_amount=np.nextafter(prepared["f_amount"], np.inf))  # a last bit apart
    assert hashed(prepared, "a") == hashed(other_cpu, "b")
    other_rows = prepared.assign(amount=prepared["amount"] + 1.0)
    assert hashed(other_rows, "c") != hashed(prepared, "d")
