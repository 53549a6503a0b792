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
    defaults. A merge (``<<: *base``) still gives way to the keys written beside it, as YAML says.

    Checked where PyYAML flattens a mapping's merges, once per mapping and before that rewrites its keys (a
    mapping merged into another is flattened when that one is, before it is constructed itself)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if not isinstance(key, Hashable):
                    continue  # PyYAML's own error names it
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} a second time (first on line {lines[key] + 1}); "
                        "YAML would keep only the last",
                        key_node.start_mark,
                    )
                lines[key] = key_node.start_mark.line
        super().flatten_mapping(node)


def load_yaml_model(path: Path, model: type[M], kind: str, error: type[Exception]) -> M:
    """Parse ``path`` as ``model``; raise ``error`` saying which ``kind`` of file is missing, unparsable or wrong."""
    try:
        with Path(path).open() as handle:  # the stream's name is the file's, in YAML's marks
            raw = yaml.load(handle, Loader=_UniqueKeys)  # noqa: S506 (a safe loader)
    except FileNotFoundError as exc:
        raise error(f"{kind} not found: {path}") from exc
    except IsADirectoryError as exc:
        raise error(f"{kind} {path} is a folder, not a file") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{kind} {path} is not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{kind} {path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<file>'}: {e['msg']}" for e in exc.errors())
        raise error(f"{kind} {path} is invalid: {problems}") from exc
