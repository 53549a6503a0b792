"""Request validation against the model's signature, straight from parsed JSON to column arrays.

A body is either ``{"rows": [{field: value, ...}, ...]}`` or ``{"columns": {field: [value, ...], ...}}``.
Every field of the signature's input schema is checked by name and type: a missing, extra or mistyped
field is a :class:`RequestError` (422) naming it, with its row. No DataFrame is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class RequestError(ValueError):
    """A request the client must fix: ``status`` is the HTTP code, the message names what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # number | integer | string | boolean
    required: bool


# MLflow column types to the JSON kind a client sends.
_KINDS = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
}
_DTYPES: dict[str, Any] = {"number": "float64", "integer": "int64", "string": object, "boolean": bool}


def _check(kind: str, value: Any) -> bool:
    if kind == "number":
        return type(value) in (float, int)  # bool is not a number here
    if kind == "integer":  # 40.0 is 40; 40.5 is not an integer
        if type(value) is float:
            return value.is_integer() and abs(value) <= 2**53
        return type(value) is int and INT64_MIN <= value <= INT64_MAX
    if kind == "string":
        return type(value) is str
    return type(value) is bool


class InputSchema:
    """The input columns a model accepts, from its MLflow signature."""

    def __init__(self, fields: list[Field]):
        if not fields:
            raise ValueError("the model's signature has no input columns")
        self.fields = fields
        self.names = [f.name for f in fields]
        self.by_name = {f.name: f for f in fields}
        self.required = frozenset(f.name for f in fields if f.required)

    @classmethod
    def from_signature(cls, signature: Any) -> InputSchema:
        """Raise ValueError when the model has no column-based input signature."""
        if signature is None or signature.inputs is None:
            raise ValueError("the model has no input signature: serving cannot validate requests for it")
        if not signature.inputs.has_input_names():
            raise ValueError("the model's input signature has no column names")
        fields = []
        for spec in signature.inputs.inputs:
            type_name = getattr(spec.type, "name", str(spec.type))
            if type_name not in _KINDS:
                raise ValueError(
                    f"input column {spec.name!r} has type {type_name}, which serving does not take"
                )
            fields.append(Field(spec.name, _KINDS[type_name], bool(getattr(spec, "required", True))))
        return cls(fields)

    def _kind_error(self, field: Field, value: Any, where: str) -> RequestError:
        got = "null" if value is None else type(value).__name__
        got = {"str": "string", "dict": "object", "list": "array", "float": "number", "int": "integer"}.get(
            got, got
        )
        if field.kind == "integer" and type(value) is int:
            got = "an integer outside int64"
        return RequestError(422, f"{where}: expected {field.kind}, got {got}")

    def parse(self, payload: Any, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
        """Column arrays and the row count, or :class:`RequestError` naming the first problem."""
        if not isinstance(payload, dict):
            raise RequestError(422, 'body must be a JSON object with "rows" or "columns"')
        keys = set(payload)
        if keys == {"rows"}:
            return self._rows(payload["rows"], max_rows)
        if keys == {"columns"}:
            return self._columns(payload["columns"], max_rows)
        extra = sorted(keys - {"rows", "columns"})
        if extra:
            raise RequestError(422, f'unexpected field {extra[0]!r}: send "rows" or "columns"')
        raise RequestError(422, 'send exactly one of "rows" or "columns"')

    def _rows(self, rows: Any, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "rows: expected a non-empty array of objects")
        if len(rows) > max_rows:
            raise RequestError(422, f"rows: {len(rows)} rows, at most {max_rows} per request")
        values: dict[str, list[Any]] = {name: [] for name in self.names}
        for index, row in enumerate(rows):
            self._row(index, row, values)
        return self._arrays(values), len(rows)

    def _row(self, index: int, row: Any, values: dict[str, list[Any]]) -> None:
        """Check one row and append its values to ``values``."""
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{index}]: expected an object")
        for name in row:
            if name not in self.by_name:
                raise RequestError(422, f"rows[{index}].{name}: unexpected field")
        for field in self.fields:
            value = row.get(field.name)
            if value is None:
                if field.required:
                    what = "null" if field.name in row else "missing"
                    raise RequestError(422, f"rows[{index}].{field.name}: required field is {what}")
            elif not _check(field.kind, value):
                raise self._kind_error(field, value, f"rows[{index}].{field.name}")
            values[field.name].append(value)

    def _columns(self, columns: Any, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
        if not isinstance(columns, dict) or not columns:
            raise RequestError(422, "columns: expected an object of arrays, one per field")
        for name in columns:
            if name not in self.by_name:
                raise RequestError(422, f"columns.{name}: unexpected field")
        length = None
        values: dict[str, list[Any]] = {}
        for field in self.fields:
            column = columns.get(field.name)
            if column is None:
                if field.required:
                    raise RequestError(422, f"columns.{field.name}: required field is missing")
                continue
            length = self._column(field, column, length, max_rows)
            values[field.name] = column
        if length is None:
            raise RequestError(422, "columns: no field given")
        for field in self.fields:  # optional columns left out are all null
            values.setdefault(field.name, [None] * length)
        return self._arrays(values), length

    def _column(self, field: Field, column: Any, length: int | None, max_rows: int) -> int:
        """Check one column against the others' ``length`` (None: it is the first); its length."""
        if not isinstance(column, list) or not column:
            raise RequestError(422, f"columns.{field.name}: expected a non-empty array")
        if length is None and len(column) > max_rows:
            raise RequestError(422, f"columns: {len(column)} rows, at most {max_rows} per request")
        if length is not None and len(column) != length:
            raise RequestError(
                422, f"columns.{field.name}: {len(column)} values, the other columns have {length}"
            )
        for index, value in enumerate(column):
            if value is None:
                if field.required:
                    raise RequestError(422, f"columns.{field.name}[{index}]: required field is null")
            elif not _check(field.kind, value):
                raise self._kind_error(field, value, f"columns.{field.name}[{index}]")
        return len(column)

    def _arrays(self, values: dict[str, list[Any]]) -> dict[str, np.ndarray]:
        out = {}
        for field in self.fields:
            column = values[field.name]
            kind = field.kind
            if kind == "integer" and None in column:
                out[field.name] = np.array([np.nan if v is None else v for v in column], dtype="float64")
            elif kind == "boolean" and None in column:
                out[field.name] = np.array(column, dtype=object)
            else:
                out[field.name] = np.array(column, dtype=_DTYPES[kind])  # None -> nan for numbers
        return out

    def example_columns(self, rows: int = 1) -> dict[str, np.ndarray]:
        """Neutral values of every field (0, "", False): for warming a model up."""
        neutral = {"number": 0.0, "integer": 0, "string": "", "boolean": False}
        return self._arrays({f.name: [neutral[f.kind]] * rows for f in self.fields})

    def json_schema(self, max_rows: int) -> dict[str, Any]:
        """The request body as JSON Schema (both forms), for the OpenAPI document."""
        kinds = {f.name: {"type": [f.kind] if f.required else [f.kind, "null"]} for f in self.fields}
        required = sorted(self.required)
        row = {"type": "object", "properties": kinds, "required": required, "additionalProperties": False}
        columns = {
            "type": "object",
            "properties": {n: {"type": "array", "items": k, "minItems": 1} for n, k in kinds.items()},
            "required": required,
            "additionalProperties": False,
        }
        return {
            "oneOf": [
                {
                    "title": "Rows",
                    "type": "object",
                    "properties": {
                        "rows": {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}
                    },
                    "required": ["rows"],
                    "additionalProperties": False,
                },
                {
                    "title": "Columns",
                    "type": "object",
                    "properties": {"columns": columns},
                    "required": ["columns"],
                    "additionalProperties": False,
                },
            ]
        }
