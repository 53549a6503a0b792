"""Read a YAML file from include/ into a pydantic model, with errors that name the file and the key."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping: PyYAML keeps the last and drops the
    first silently, so a section written twice (two ``triggers:``) lost its first half's settings to the
    defaults. A merge (``<<: *base``) still gives way to the keys written beside it, as YAML says."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in lines:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key {key!r} a second time (first on line {lines[key] + 1}); "
                    "YAML would keep only the last",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml_model(path: Path, model: type[M], kind: str, error: type[Exception]) -> M:
    """Parse ``path`` as ``model``; raise ``error`` saying which ``kind`` of file is missing, unparsable or wrong."""
    try:
        with Path(path).open() as handle:  # the stream's name is the file's, in YAML's marks
            raw = yaml.load(handle, Loader=_UniqueKeys)  # noqa: S506 (a safe loader)
    except FileNotFoundError as exc:
        raise error(f"{kind} not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{kind} {path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<file>'}: {e['msg']}" for e in exc.errors())
        raise error(f"{kind} {path} is invalid: {problems}") from exc
