"""Request validation against the model's signature and data contract, straight from parsed JSON to arrays.

A body is either ``{"rows": [{field: value, ...}, ...]}`` or ``{"columns": {field: [value, ...], ...}}``.
Every field of the signature's input schema is checked by name and type: a missing, extra or mistyped
field is a :class:`RequestError` (422) naming it, with its row. No DataFrame is built.

A model that carries its data contract also has a domain per field: the contract's ``allowed`` values
(compared by JSON type too: ``"1"`` is not ``1``, ``true`` is not ``1``) and its ``min`` and ``max``. A
value outside it is an :class:`OutOfDomainError` (422) naming the field, the row, the value and what is
allowed, or, when the caller asks to flag instead, the row is marked with the fields that are outside.
The checks are built once per model and run on the column arrays, vectorised.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from pipelines.data.contract import Contract

log = logging.getLogger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
OutOfDomain = Literal["reject", "flag"]
_SHOWN_CHARS = 80  # a value longer than this is cut in a message
# RFC 3339's date-time (section 5.6): seconds required, T (or a space) between date and time, Z or +HH:MM; the
# offset is matched apart so that its absence gets its own message. ISO 8601's other forms (week dates, basic
# format, hours alone) that Python's fromisoformat reads are refused: a log joined by event time must not
# depend on which parser a client's library assumed.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?)([Zz]|[+-]\d{2}:\d{2})?")
_SCALAR_ROWS = 32  # up to this many rows, a domain is checked value by value; above, with numpy


class RequestError(ValueError):
    """A request the client must fix: ``status`` is the HTTP code, the message names what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class OutOfDomainError(RequestError):
    """A value outside the contract's domain (422); ``rows_by_field`` counts the request's such rows."""

    def __init__(self, message: str, rows_by_field: dict[str, int]):
        super().__init__(422, message)
        self.rows_by_field = rows_by_field


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # number | integer | string | boolean
    required: bool
    allowed: tuple[Any, ...] | None = None  # the contract's allowed values, in its order
    minimum: float | None = None
    maximum: float | None = None
    #: The signature's type is 32 bits wide (MLflow's ``integer`` or ``float``): a model of MLflow's own kind
    #: refuses the 64-bit column a request is parsed into ("Can not safely convert").
    narrow: bool = False


@dataclass(frozen=True)
class JoinFields:
    """The contract's entity id and event time, which a request may send with each row to be logged."""

    entity: str
    entity_kind: str  # string | integer: the JSON kind of the contract's entity id
    event_time: str


@dataclass(frozen=True)
class RowKeys:
    """What a request sent to join its rows to labels later: one entry per row, None or NaT where missing."""

    entity_id: np.ndarray  # object: str or None
    event_time: np.ndarray  # datetime64[us], UTC; NaT where missing


@dataclass(frozen=True)
class ParsedRequest:
    columns: dict[str, np.ndarray]
    rows: int
    out_of_domain: dict[int, list[str]]  # flag mode: row index -> the fields outside the domain
    keys: RowKeys | None = None  # None when the request sent no entity id and no event time


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
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "number": (float, int),
    "integer": (int,),
    "string": (str,),
    "boolean": (bool,),
}


#: The largest magnitude a number may have: models compute in float32 (the project's encoders and the torch
#: MLP), where a larger one is infinite, and flag mode answered 200 with a null probability for it.
NUMBER_MAX = float(np.finfo(np.float32).max)


def _check(kind: str, value: Any) -> bool:
    if kind == "number":  # bool is not a number here
        return type(value) in (float, int) and abs(value) <= NUMBER_MAX
    if kind == "integer":  # 40.0 is 40; 40.5 is not an integer
        if type(value) is float:
            return value.is_integer() and abs(value) <= 2**53
        return type(value) is int and INT64_MIN <= value <= INT64_MAX
    if kind == "string":
        return type(value) is str
    return type(value) is bool


def _shown(value: Any) -> str:
    """A value as a message shows it: a string quoted (escapes shown, so a NUL is seen), cut when long."""
    if isinstance(value, np.generic):
        value = value.item()
    if type(value) is bool:
        return "true" if value else "false"  # as it was sent: JSON's, not Python's
    if type(value) is float and value.is_integer():
        value = int(value)  # an integer column with nulls is float64: 0.0 was sent as 0
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}…"


def event_time(value: Any, where: str) -> np.datetime64:
    """An RFC 3339 date-time with its offset (``2026-11-30T14:05:00Z``) as UTC microseconds; else a 422."""
    if type(value) is not str:
        got = "null" if value is None else type(value).__name__
        raise RequestError(422, f"{where}: expected an RFC 3339 date-time string, got {got}")
    form = _RFC3339.fullmatch(value)
    try:
        parsed = dt.datetime.fromisoformat(value.upper()) if form else None  # 't' and 'z' are RFC 3339's too
    except ValueError:  # a month 13, an hour 25
        parsed = None
    if form is None or parsed is None:
        raise RequestError(422, f"{where}: {_shown(value)} is not an RFC 3339 date-time")
    if form.group(2) is None:
        raise RequestError(422, f"{where}: {_shown(value)} has no UTC offset (add Z or +HH:MM)")
    try:
        utc = parsed.astimezone(dt.UTC)
    except OverflowError:  # year 1 or 9999 moved past the calendar's edge by its offset
        raise RequestError(422, f"{where}: {_shown(value)} is out of range in UTC") from None
    return np.datetime64(utc.replace(tzinfo=None), "us")


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Domain:
    """One field's domain, precomputed once per model: which rows of a column array fall outside it.

    The allowed values, when the contract lists them, are the domain; otherwise ``min`` and ``max`` are.
    """

    def __init__(self, field: Field):
        self.name = field.name
        self.kind = field.kind
        numeric = field.kind in ("number", "integer")
        self.low = -math.inf if field.minimum is None or not numeric else float(field.minimum)
        self.high = math.inf if field.maximum is None or not numeric else float(field.maximum)
        self.values: tuple[Any, ...] = ()  # the allowed values of the field's type, in the contract's order
        self.allowed: frozenset[Any] | None = None
        self.allowed_array: np.ndarray | None = None
        if field.allowed is not None:
            # Only values of the field's JSON type can match: an int category never takes "1" or true.
            types = _JSON_TYPES[field.kind]
            typed = [v for v in field.allowed if type(v) in types]
            if not typed:
                raise ValueError(
                    f"input column {field.name!r} is {field.kind} in the signature, but the contract allows "
                    f"only {list(field.allowed)}: no request could match them"
                )
            if len(typed) < len(field.allowed):
                log.warning(
                    "field %s (%s): allowed values %s are not all of its type; the others never match",
                    field.name,
                    field.kind,
                    list(field.allowed),
                )
            self.values = tuple(typed)
            self.allowed = frozenset(typed)
            if numeric:
                self.allowed_array = np.array(typed, dtype=_DTYPES[field.kind])
        self.described = ", ".join(_shown(v) for v in self.values)

    def is_outside(self, value: Any) -> bool:
        """Whether one parsed value is outside the domain; a null (None, NaN) is not."""
        if self.allowed is not None:
            return value is not None and value == value and value not in self.allowed
        return value < self.low or value > self.high  # NaN compares False

    def _all_inside(self, values: list[Any]) -> bool:
        """True when every value is inside, found in C loops; False when one may not be (a null, too).

        A NaN (a null number) never hides a value beyond a bound: ``min`` and ``max`` return it only when
        it comes first, and then the comparison fails and the values are checked one by one.
        """
        if self.allowed is not None:
            return self.allowed.issuperset(values)
        return self.low <= min(values) and max(values) <= self.high

    def outside(self, column: np.ndarray) -> np.ndarray | None:
        """A mask of the rows whose value is outside the domain (nulls are not), or None when none is.

        A request's few rows are checked value by value (a numpy call on a tiny array costs more);
        many rows at once, with numpy.
        """
        if len(column) <= _SCALAR_ROWS or column.dtype == object:  # strings: a set lookup per value
            values = column.tolist()
            if self._all_inside(values):
                return None
            mask = np.fromiter(map(self.is_outside, values), dtype=bool, count=len(values))
        elif self.allowed_array is not None:
            mask = ~np.isin(column, self.allowed_array)
            if column.dtype.kind == "f":
                mask &= ~np.isnan(column)
        elif self.allowed is not None:  # booleans
            mask = ~np.isin(column, np.array(list(self.allowed), dtype=bool))
        else:
            mask = (column < self.low) | (column > self.high)  # NaN (null) compares False
        return mask if mask.any() else None

    def problem(self, value: Any) -> str:
        """Why one value is outside the domain."""
        if self.allowed is not None:
            return f"{_shown(value)} is not one of {self.described}"
        if value < self.low:
            return f"{_shown(value)} is below the minimum {_bound(self.low)}"
        return f"{_shown(value)} is above the maximum {_bound(self.high)}"

    def json_schema(self) -> dict[str, Any]:
        """``enum`` or ``minimum``/``maximum`` of the field, as JSON Schema."""
        if self.allowed is not None:
            return {"enum": list(self.values)}
        out: dict[str, Any] = {}
        if math.isfinite(self.low):
            out["minimum"] = math.ceil(self.low) if self.kind == "integer" else self.low
        if math.isfinite(self.high):
            out["maximum"] = math.floor(self.high) if self.kind == "integer" else self.high
        return out


class InputSchema:
    """The input columns a model accepts, from its MLflow signature (and its data contract, if it has one)."""

    def __init__(
        self,
        fields: list[Field],
        example: list[dict[str, Any]] | None = None,
        join: JoinFields | None = None,
    ):
        if not fields:
            raise ValueError("the model's signature has no input columns")
        self.fields = fields
        inputs = {f.name for f in fields}
        self.join = join if join is not None and not {join.entity, join.event_time} & inputs else None
        self.names = [f.name for f in fields]
        self.by_name = {f.name: f for f in fields}
        self.required = frozenset(f.name for f in fields if f.required)
        self.kinds = {f.name: f.kind for f in fields}  # the JSON kind of each: what the prediction log writes
        self.domains: dict[str, _Domain] = {}
        for f in fields:
            if f.allowed is not None or f.minimum is not None or f.maximum is not None:
                self.domains[f.name] = _Domain(f)
        self.example = self._checked_example(example) if example else None

    @classmethod
    def from_signature(
        cls,
        signature: Any,
        contract: Contract | None = None,
        example: list[dict[str, Any]] | None = None,
    ) -> InputSchema:
        """Raise ValueError when the model has no column-based input signature.

        ``contract``: the model's data contract; a column it names gets its allowed values, bounds and
        nullability. ``example``: rows to show in the API's documentation (the model's input example).
        """
        if signature is None or signature.inputs is None:
            raise ValueError("the model has no input signature: serving cannot validate requests for it")
        if not signature.inputs.has_input_names():
            raise ValueError("the model's input signature has no column names")
        fields = []
        columns = contract.columns if contract is not None else {}
        for spec in signature.inputs.inputs:
            type_name = getattr(spec.type, "name", str(spec.type))
            if type_name not in _KINDS:
                raise ValueError(
                    f"input column {spec.name!r} has type {type_name}, which serving does not take"
                )
            kind, required = _KINDS[type_name], bool(getattr(spec, "required", True))
            narrow = type_name in ("integer", "float")
            rule = columns.get(spec.name)
            if rule is None:
                fields.append(Field(spec.name, kind, required, narrow=narrow))
                continue
            fields.append(
                Field(
                    spec.name,
                    kind,
                    not rule.nullable,  # the contract says whether a null is data; the example may not show it
                    tuple(rule.allowed) if rule.allowed else None,
                    rule.min,
                    rule.max,
                    narrow=narrow,
                )
            )
        join = None
        if contract is not None:
            entity = contract.columns[contract.entity_id]
            join = JoinFields(
                contract.entity_id, "integer" if entity.value_type == "int" else "string", contract.event_time
            )
        return cls(fields, example, join)

    def _kind_error(self, field: Field, value: Any, where: str) -> RequestError:
        got = "null" if value is None else type(value).__name__
        got = {"str": "string", "dict": "object", "list": "array", "float": "number", "int": "integer"}.get(
            got, got
        )
        if field.kind == "integer" and type(value) is int:
            got = "an integer outside int64"
        if field.kind == "number" and type(value) in (float, int):
            got = f"{value:.4g}, beyond the largest a model computes with (float32: {NUMBER_MAX:.4g})"
        return RequestError(422, f"{where}: expected {field.kind}, got {got}")

    def parse(self, payload: Any, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
        """Column arrays and the row count, or :class:`RequestError` naming the first problem (a value
        outside the domain included)."""
        parsed = self.parse_request(payload, max_rows)
        return parsed.columns, parsed.rows

    def parse_request(
        self, payload: Any, max_rows: int, out_of_domain: OutOfDomain = "reject"
    ) -> ParsedRequest:
        """The request's columns; a value outside the domain is refused, or flagged on its row."""
        if not isinstance(payload, dict):
            raise RequestError(422, 'body must be a JSON object with "rows" or "columns"')
        keys = set(payload)
        if keys == {"rows"}:
            columns, rows, row_keys = self._rows(payload["rows"], max_rows)
            return self._in_domain(columns, rows, out_of_domain, by_row=True, keys=row_keys)
        if keys == {"columns"}:
            columns, rows, row_keys = self._columns(payload["columns"], max_rows)
            return self._in_domain(columns, rows, out_of_domain, by_row=False, keys=row_keys)
        extra = sorted(keys - {"rows", "columns"})
        if extra:
            raise RequestError(422, f'unexpected field {extra[0]!r}: send "rows" or "columns"')
        raise RequestError(422, 'send exactly one of "rows" or "columns"')

    def outside_domain(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """For each field with values outside its domain, the mask of those rows."""
        masks = {}
        for name, domain in self.domains.items():
            mask = domain.outside(columns[name])
            if mask is not None:
                masks[name] = mask
        return masks

    def _in_domain(
        self,
        columns: dict[str, np.ndarray],
        rows: int,
        out_of_domain: OutOfDomain,
        by_row: bool,
        keys: RowKeys | None = None,
    ) -> ParsedRequest:
        masks = self.outside_domain(columns) if self.domains else {}
        if not masks:
            return ParsedRequest(columns, rows, {}, keys)
        if out_of_domain == "flag":
            flagged: dict[int, list[str]] = {}
            for name, mask in masks.items():  # in field order, so each row's list is too
                for index in np.flatnonzero(mask).tolist():
                    flagged.setdefault(index, []).append(name)
            return ParsedRequest(columns, rows, flagged, keys)
        counts = {name: int(mask.sum()) for name, mask in masks.items()}
        firsts = {name: int(np.argmax(mask)) for name, mask in masks.items()}
        if by_row:  # the first row with a problem, its first field: as the type checks go
            name = min(firsts, key=lambda n: firsts[n])
            where = f"rows[{firsts[name]}].{name}"
        else:  # the first field with a problem, its first value
            name = next(iter(firsts))
            where = f"columns.{name}[{firsts[name]}]"
        value = columns[name][firsts[name]]
        raise OutOfDomainError(f"{where}: {self.domains[name].problem(value)}", counts)

    def _rows(self, rows: Any, max_rows: int) -> tuple[dict[str, np.ndarray], int, RowKeys | None]:
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "rows: expected a non-empty array of objects")
        if len(rows) > max_rows:
            raise RequestError(422, f"rows: {len(rows)} rows, at most {max_rows} per request")
        values: dict[str, list[Any]] = {name: [] for name in self.names}
        keys: dict[int, dict[str, Any]] = {}  # row index -> the join fields it sent
        for index, row in enumerate(rows):
            self._row(index, row, values, keys)
        return self._arrays(values), len(rows), self._row_keys(keys, len(rows), "rows[{index}].{field}")

    def _row(
        self, index: int, row: Any, values: dict[str, list[Any]], keys: dict[int, dict[str, Any]]
    ) -> None:
        """Check one row and append its values to ``values`` (its join fields, if any, to ``keys``)."""
        if not isinstance(row, dict):
            raise RequestError(422, f"rows[{index}]: expected an object")
        for name in row:
            if name not in self.by_name:
                if self.join is not None and name in (self.join.entity, self.join.event_time):
                    keys.setdefault(index, {})[name] = row[name]
                    continue
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

    def _columns(self, columns: Any, max_rows: int) -> tuple[dict[str, np.ndarray], int, RowKeys | None]:
        if not isinstance(columns, dict) or not columns:
            raise RequestError(422, "columns: expected an object of arrays, one per field")
        join_names = (self.join.entity, self.join.event_time) if self.join is not None else ()
        for name in columns:
            if name not in self.by_name and name not in join_names:
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
        keys = self._sent_join_columns(columns, join_names, length)
        return self._arrays(values), length, self._row_keys(keys, length, "columns.{field}[{index}]")

    @staticmethod
    def _sent_join_columns(
        columns: dict[str, Any], join_names: Sequence[str], length: int
    ) -> dict[int, dict[str, Any]]:
        """Row index -> the join fields it sent, from the columns form."""
        keys: dict[int, dict[str, Any]] = {}
        for name in join_names:
            sent = columns.get(name)
            if sent is None:  # left out, or sent as null: as an optional feature column, none sent
                continue
            if not isinstance(sent, list) or len(sent) != length:
                given = f"{len(sent)} values" if isinstance(sent, list) else "not an array"
                raise RequestError(422, f"columns.{name}: {given}, the other columns have {length}")
            for index, value in enumerate(sent):
                if value is not None:
                    keys.setdefault(index, {})[name] = value
        return keys

    def _row_keys(self, sent: dict[int, dict[str, Any]], rows: int, where: str) -> RowKeys | None:
        """The join fields of every row, checked (``where`` formats a value's place from its index and field)."""
        if not sent or self.join is None:
            return None
        join = self.join
        entity = np.full(rows, None, dtype=object)
        times = np.full(rows, np.datetime64("NaT"), dtype="datetime64[us]")
        for index, fields in sent.items():
            value = fields.get(join.entity)
            if value is not None:
                if not _check(join.entity_kind, value):
                    got = {"str": "string", "int": "integer", "float": "number"}.get(
                        type(value).__name__, "other"
                    )
                    raise RequestError(
                        422,
                        f"{where.format(index=index, field=join.entity)}: expected {join.entity_kind} (the entity "
                        f"id), got {got}",
                    )
                entity[index] = str(int(value)) if join.entity_kind == "integer" else value
            value = fields.get(join.event_time)
            if value is not None:
                times[index] = event_time(value, where.format(index=index, field=join.event_time))
        return RowKeys(entity, times)

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

    def neutral_row(self) -> dict[str, Any]:
        """One row inside every field's domain: the first allowed value, else 0 within the bounds, "" or false."""
        row = {}
        for f in self.fields:
            domain = self.domains.get(f.name)
            if domain is not None and domain.values:
                row[f.name] = domain.values[0]
            elif f.kind in ("number", "integer"):
                value = 0.0
                if domain is not None:
                    value = min(max(value, domain.low), domain.high)
                row[f.name] = math.ceil(value) if f.kind == "integer" else value
            else:
                row[f.name] = "" if f.kind == "string" else False
        return row

    def example_columns(self, rows: int = 1) -> dict[str, np.ndarray]:
        """Values inside every field's domain (the first allowed, else 0, "" or false): for a warm-up."""
        row = self.neutral_row()
        return self._arrays({name: [row[name]] * rows for name in self.names})

    def _checked_example(self, example: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The example rows when they pass this schema (domain included); None, logged, when not."""
        rows = [{name: row.get(name) for name in self.names} for row in example]
        try:
            self.parse({"rows": rows}, len(rows))
        except RequestError as exc:
            log.warning("the model's input example is not a valid request (%s); the API shows another", exc)
            return None
        return rows

    def example_body(self) -> dict[str, Any]:
        """A request body that passes: the model's input example, else one row inside every domain."""
        return {"rows": self.example or [self.neutral_row()]}

    def json_schema(self, max_rows: int) -> dict[str, Any]:
        """The request body as JSON Schema (both forms, with domains and examples), for the OpenAPI document."""
        kinds = {f.name: self._field_schema(f) for f in self.fields}
        kinds |= self._join_schemas()
        required = sorted(self.required)
        row = {"type": "object", "properties": kinds, "required": required, "additionalProperties": False}
        columns = {
            "type": "object",
            "properties": {
                n: {"type": "array", "items": k, "minItems": 1, "maxItems": max_rows}
                for n, k in kinds.items()
            },
            "required": required,
            "additionalProperties": False,
        }
        example = self.example_body()["rows"]
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
                    "examples": [{"rows": example}],
                },
                {
                    "title": "Columns",
                    "type": "object",
                    "properties": {"columns": columns},
                    "required": ["columns"],
                    "additionalProperties": False,
                    "examples": [{"columns": {n: [r[n] for r in example] for n in self.names}}],
                },
            ]
        }

    def _join_schemas(self) -> dict[str, dict[str, Any]]:
        """The optional entity id and event time, documented as what lets the monitor join labels later."""
        if self.join is None:
            return {}
        why = (
            "Optional, never given to the model: logged with the row's prediction so that the label that "
            "arrives later for this entity and event time can be joined to it (live quality). Rows sent "
            "without it are answered all the same, and counted as unjoinable."
        )
        return {
            self.join.entity: {
                "type": [self.join.entity_kind, "null"],
                "description": f"The entity id (the data contract's {self.join.entity}). {why}",
            },
            self.join.event_time: {
                "type": ["string", "null"],
                "format": "date-time",
                "description": f"When the event happened, RFC 3339 with its offset (the data contract's "
                f"{self.join.event_time}). {why}",
            },
        }

    def _field_schema(self, field: Field) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": [field.kind] if field.required else [field.kind, "null"]}
        domain = self.domains.get(field.name)
        if domain is not None:
            schema |= domain.json_schema()
            if "enum" in schema and not field.required:
                schema["enum"] = [*schema["enum"], None]  # JSON Schema: an enum lists null to allow it
        return schema
