"""Reports and quarantine: where a day's validation report is saved, and where a failing day's files go."""

from __future__ import annotations

import datetime as dt
import posixpath

from fsspec.core import url_to_fs

from pipelines.data import storage
from pipelines.data.sources import SourcePartition, shown_name
from pipelines.data.validation import ValidationReport
from pipelines.settings import Settings


def quarantine_uri(data_root: str, dataset: str, day: dt.date) -> str:
    return storage.join(data_root, "quarantine", dataset, f"ds={storage.ds_str(day)}")


def save_report(settings: Settings, report: ValidationReport, day: dt.date) -> str:
    """Write the report as ``validation.json`` and ``validation.md`` under the day's reports; the JSON's URI."""
    folder = storage.reports_uri(settings.resolved_data_root, settings.dataset, day)
    storage.write_json_atomic(storage.join(folder, "validation.json"), report.to_dict())
    storage.write_text_atomic(storage.join(folder, "validation.md"), report.to_markdown())
    return storage.join(folder, "validation.json")


def _quarantined_names(source: SourcePartition) -> list[str]:
    """Each file's name under ``files/``: as the report names it (its path below the day's folder), or, where
    two would share a name (a glob's matches in several folders), its path below the folder they share."""
    names = [shown_name(source, uri) for uri in source.files]
    if len(set(names)) == len(names):
        return names
    paths = [url_to_fs(uri)[1] for uri in source.files]
    shared = posixpath.commonpath(paths)
    return [path[len(shared) :].strip("/") for path in paths]


def quarantine(settings: Settings, source: SourcePartition, report: ValidationReport) -> str:
    """Copy the failing day's files beside its report, under ``quarantine/<dataset>/ds=<day>/files/``."""
    target = quarantine_uri(settings.resolved_data_root, settings.dataset, source.day)
    with storage.atomic_dir(target) as tmp:
        for uri, name in zip(source.files, _quarantined_names(source), strict=True):
            src_fs, src_path = url_to_fs(uri)
            with (
                src_fs.open(src_path, "rb") as src,
                storage.open_write(storage.join(tmp, "files", name)) as dst,
            ):
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
        storage.write_json_atomic(storage.join(tmp, "validation.json"), report.to_dict())
        storage.write_text_atomic(storage.join(tmp, "validation.md"), report.to_markdown())
    return target
