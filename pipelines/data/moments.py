"""Per-column count, mean and standard deviation of a Parquet split, one batch in memory at a time.

The prepare stage computes them for the training split's features on its engine's workers (a file group per
task) and writes them into the dataset's manifest; training scales its inputs with them, so no process reads
the whole split to learn its scaling. Partial moments merge exactly (Chan et al.'s pairwise update), so the
result does not depend on how the rows are split into files; only the last bits of a float differ between
groupings, which is why these figures are never hashed or compared exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

#: A spread this small against its column's mean is rounding, not data: the mean of equal values that are not
#: dyadic (0.1, 12345.67) is not exactly that value, so their std came out 1e-17 to 1e-10 (2e-16 to 5e-15 of
#: the mean, by how the rows were split into partitions or files), and the bucket scheme was taken from that
#: noise. Epoch milliseconds (1.7e12) spread by 1 are 6e-13 of their mean: data, kept.
RELATIVE_NOISE = 1e-13
#: The same for the model's scaling: models compute in float32, which cannot tell values closer than its
#: epsilon (1.19e-7) of their size apart, so such a feature is constant to them.
FLOAT32_NOISE = float(np.finfo(np.float32).eps)


def spread(std: np.ndarray | float, mean: np.ndarray | float, relative: float = RELATIVE_NOISE) -> np.ndarray:
    """``std``, with 0 where it is rounding noise (at most ``relative`` of ``|mean|``)."""
    std, mean = np.asarray(std, dtype="float64"), np.asarray(mean, dtype="float64")
    return np.where(std > relative * np.abs(mean), std, 0.0)


BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Moments:
    """Rows, per-column means and sums of squared deviations (``m2``) of some rows."""

    rows: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, columns: int) -> Moments:
        return cls(0, np.zeros(columns), np.zeros(columns))

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        if not len(values):
            return cls.empty(values.shape[1])
        mean = values.mean(axis=0, dtype=np.float64)
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0, dtype=np.float64))

    def merge(self, other: Moments) -> Moments:
        if not other.rows:
            return self
        if not self.rows:
            return other
        rows = self.rows + other.rows
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.rows / rows)
        m2 = self.m2 + other.m2 + delta**2 * (self.rows * other.rows / rows)
        return Moments(rows, mean, m2)

    @property
    def std(self) -> np.ndarray:
        """The population standard deviation (``numpy.std``'s default)."""
        return np.sqrt(self.m2 / self.rows) if self.rows else np.zeros_like(self.mean)

    def to_json(self) -> dict[str, object]:
        return {"rows": self.rows, "mean": self.mean.tolist(), "std": self.std.tolist()}


def file_moments(columns: list[str], file_uris: list[str]) -> Moments:
    """The moments of ``columns`` over some Parquet files, read batch by batch (nulls are not expected:
    validation has rejected them before prepare)."""
    total = Moments.empty(len(columns))
    for uri in file_uris:
        fs, path = url_to_fs(uri)
        with fs.open(path, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                values = np.column_stack(
                    [batch.column(name).to_numpy(zero_copy_only=False) for name in columns]
                ).astype(np.float64)
                total = total.merge(Moments.of(values))
    return total


FileMapper = Callable[[Callable[[list[str]], Moments], list[list[str]]], list[Moments]]


def split_moments(file_uris: list[str], columns: list[str], map_files: FileMapper | None = None) -> Moments:
    """The moments of a split's files: groups of files on the engine's workers (``map_files``), or here."""
    groups = [file_uris[i : i + 4] for i in range(0, len(file_uris), 4)]
    task = functools.partial(file_moments, columns)
    parts = (map_files or (lambda fn, items: [fn(i) for i in items]))(task, groups)
    return functools.reduce(Moments.merge, parts, Moments.empty(len(columns)))
