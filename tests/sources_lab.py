"""A source day made of files the tests choose: what the validation tests on either engine share."""

from __future__ import annotations

from pathlib import Path

from pipelines.data import sources
from tests.days import DAY


def day_of_files(settings, contract, root: Path, files: dict[str, object], fmt: str):
    """A source day under ``root`` (``root/<day>/``) of several files: a frame each (written as ``fmt``), or the
    file's bytes. The day's source partition, and the contract with that format."""
    contract = contract.model_copy(update={"source": contract.source.model_copy(update={"format": fmt})})
    folder = root / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        elif fmt == "csv":
            content.to_csv(folder / name, index=False)
        else:
            content.to_parquet(folder / name, index=False)
    settings = settings.model_copy(update={"source_uri": str(root / "{ds}")})
    return sources.partition(settings, contract, DAY), contract
