"""Bulk imports (CSV or JSON, up to 10,000 rows) with a per-row report.

Reading is strict and explains itself: wrong encodings, malformed CSV, unknown or missing columns and
oversize files are refused as a whole with a problem naming the line; a bad *row* (invalid value, duplicate
within the file, unknown reference) is reported per row. Domain services validate every row against the
stored data first and then apply the good ones in one flush, so nothing is ever stored half-way:
``mode=atomic`` stores nothing if any row is bad (422 with the report), ``mode=partial`` stores the good
rows and reports the rest, ``dry_run=true`` reports without storing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile

from msp_platform.kit.errors import (
    BadRequest,
    FieldError,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    problem_type,
)

MAX_ROWS = 10_000
IMPORT_MAX_BODY_BYTES = 25 * 1024 * 1024
T = TypeVar("T")
_TRUE = {"true", "yes", "y", "1", "t", "x"}
_FALSE = {"false", "no", "n", "0", "f", ""}
_CHARSET = re.compile(r"charset=([A-Za-z0-9._-]+)", re.IGNORECASE)


class ImportMode(StrEnum):
    atomic = "atomic"
    partial = "partial"


class RowStatus(StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"
    error = "error"
    # Valid, but not stored: the import was atomic and another row failed, or it was a dry run.
    valid = "valid"


@dataclass(frozen=True)
class SourceRow:
    line: int  # 1-based line (CSV: the physical line, header is line 1) or item number (JSON)
    values: dict[str, Any]


class RowError(msgspec.Struct):
    field: str
    message: str


class RowOutcome(msgspec.Struct, kw_only=True):
    row: int
    status: str
    key: str | None = None
    id: str | None = None
    errors: list[RowError] = msgspec.field(default_factory=list)


class ImportReport(msgspec.Struct, kw_only=True):
    mode: str
    dry_run: bool
    committed: bool
    total: int
    created: int
    updated: int
    unchanged: int
    failed: int
    rows: list[RowOutcome]


IMPORT_FAILED = problem_type(
    "import-failed",
    422,
    "Import refused",
    "An atomic import had invalid rows, so nothing was stored; `report.rows` says what is wrong with each.",
)


class ImportFailed(ValidationFailed):
    problem = IMPORT_FAILED

    def __init__(self, report: ImportReport) -> None:
        super().__init__(
            f"{report.failed} of {report.total} rows are invalid; nothing was stored (mode=atomic).",
            extra={"report": msgspec.to_builtins(report)},
        )


@dataclass
class ReportBuilder:
    mode: ImportMode
    dry_run: bool
    outcomes: dict[int, RowOutcome] = field(default_factory=dict)

    def error(self, row: SourceRow, key: str | None, errors: Iterable[tuple[str, str]]) -> None:
        existing = self.outcomes.get(row.line)
        items = [RowError(f, m) for f, m in errors]
        if existing is not None and existing.status == RowStatus.error:
            existing.errors.extend(items)
            return
        self.outcomes[row.line] = RowOutcome(row=row.line, status=RowStatus.error, key=key, errors=items)

    def ok(self, row: SourceRow, key: str | None, status: RowStatus, ident: Any = None) -> None:
        self.outcomes[row.line] = RowOutcome(
            row=row.line, status=status, key=key, id=str(ident) if ident is not None else None
        )

    def failed(self, row: SourceRow) -> bool:
        found = self.outcomes.get(row.line)
        return found is not None and found.status == RowStatus.error

    @property
    def any_failed(self) -> bool:
        return any(o.status == RowStatus.error for o in self.outcomes.values())

    def build(self, *, committed: bool) -> ImportReport:
        rows = [self.outcomes[k] for k in sorted(self.outcomes)]
        if not committed and not self.dry_run:
            # An atomic import that failed stored nothing: say so row by row instead of claiming "created".
            # (A dry run keeps created/updated/unchanged as the preview of what it would do.)
            rows = [
                RowOutcome(row=o.row, status=RowStatus.valid, key=o.key, id=None)
                if o.status != RowStatus.error
                else o
                for o in rows
            ]

        def count(status: RowStatus) -> int:
            return sum(1 for o in rows if o.status == status)

        return ImportReport(
            mode=self.mode.value,
            dry_run=self.dry_run,
            committed=committed,
            total=len(rows),
            created=count(RowStatus.created),
            updated=count(RowStatus.updated),
            unchanged=count(RowStatus.unchanged),
            failed=count(RowStatus.error),
            rows=rows,
        )

    def finish(self) -> ImportReport:
        """The report to return; raises ImportFailed for an atomic import with bad rows."""
        if self.mode is ImportMode.atomic and self.any_failed:
            raise ImportFailed(self.build(committed=False))
        return self.build(committed=not self.dry_run)


# --- reading ------------------------------------------------------------------------------------------------


def _normalize_header(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def parse_csv(
    data: bytes, *, charset: str | None, columns: Sequence[str], required: Sequence[str] = ()
) -> list[SourceRow]:
    encoding = (charset or "utf-8-sig").lower()
    if encoding in {"utf-8", "utf8"}:
        encoding = "utf-8-sig"  # Excel writes a byte-order mark
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise UnsupportedMediaType(f"Unknown charset {charset!r}.") from exc
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationFailed(
            f"The file is not valid {charset or 'UTF-8'} (byte {exc.start}, line {line}). Save it as "
            "'CSV UTF-8', or name its encoding: Content-Type: text/csv; charset=windows-1252.",
            errors=[FieldError("file", f"undecodable byte at line {line}")],
        ) from exc
    if "\x00" in text:
        raise ValidationFailed("The file contains NUL bytes: it is not a text CSV file.")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ValidationFailed(f"Malformed CSV on line 1: {exc}.") from exc
    if header is None or not any(h.strip() for h in header):
        raise ValidationFailed("The file is empty: the first line must name the columns.")
    names = [_normalize_header(h) for h in header]
    _check_columns(names, columns, required)
    rows: list[SourceRow] = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= MAX_ROWS:
                raise PayloadTooLarge(f"More than {MAX_ROWS:,} rows; split the file.")
            record: dict[str, Any] = {}
            for i, raw in enumerate(values):
                if i >= len(names):
                    record.setdefault("__extra__", []).append(raw)
                    continue
                cleaned = raw.strip()
                record[names[i]] = cleaned if cleaned != "" else None
            rows.append(SourceRow(line, record))
    except csv.Error as exc:
        raise ValidationFailed(f"Malformed CSV on line {reader.line_num}: {exc}.") from exc
    return rows


def _check_columns(names: Sequence[str], columns: Sequence[str], required: Sequence[str]) -> None:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for name in names:
        if not name:
            errors.append(FieldError("header", "a column has no name"))
        elif name in seen:
            errors.append(FieldError(name, "column appears twice"))
        elif name not in columns:
            errors.append(FieldError(name, f"unknown column; allowed: {', '.join(columns)}"))
        seen.add(name)
    for name in required:
        if name not in seen:
            errors.append(FieldError(name, "required column is missing"))
    if errors:
        raise ValidationFailed("The file's columns are not the expected ones.", errors=errors)


def parse_json(data: bytes, *, columns: Sequence[str]) -> list[SourceRow]:
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    items = decoded.get("rows") if isinstance(decoded, dict) else decoded
    if not isinstance(items, list):
        raise ValidationFailed('Send a JSON array of rows, or {"rows": [...]}.')
    if len(items) > MAX_ROWS:
        raise PayloadTooLarge(f"More than {MAX_ROWS:,} rows; split the import.")
    rows = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            rows.append(SourceRow(i, {"__invalid__": True}))
            continue
        rows.append(SourceRow(i, dict(item)))
    return rows


async def read_import(
    request: Request[Any, Any, Any], *, columns: Sequence[str], required: Sequence[str] = ()
) -> list[SourceRow]:
    """The rows of a CSV (text/csv body, or a multipart ``file``) or JSON import."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    charset_match = _CHARSET.search(content_type)
    charset = charset_match.group(1) if charset_match else None
    if media in {"text/csv", "application/csv"}:
        return parse_csv(await request.body(), charset=charset, columns=columns, required=required)
    if media == "application/json":
        return parse_json(await request.body(), columns=columns)
    if media == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationFailed(
                "Attach the file as the multipart field 'file'.", errors=[FieldError("file", "missing")]
            )
        data = await upload.read()
        # Litestar keeps the part's parameters (charset) in its headers, not in content_type.
        part_header = (
            upload.headers.get("content-type")
            or upload.headers.get("Content-Type")
            or upload.content_type
            or ""
        )
        part_type = part_header.lower()
        if part_type.startswith("application/json") or upload.filename.lower().endswith(".json"):
            return parse_json(data, columns=columns)
        part_charset = _CHARSET.search(part_header)
        return parse_csv(
            data,
            charset=part_charset.group(1) if part_charset else charset,
            columns=columns,
            required=required,
        )
    raise UnsupportedMediaType(
        "Send the import as text/csv, application/json or multipart/form-data (field 'file')."
    )


def convert_row(
    row: SourceRow, struct_type: type[T], *, bool_fields: Iterable[str] = ()
) -> tuple[T | None, list[tuple[str, str]]]:
    """Turn one source row into ``struct_type``; returns the per-field errors instead of raising."""
    if row.values.get("__invalid__"):
        return None, [("row", "must be an object")]
    if "__extra__" in row.values:
        return None, [("row", "has more values than the header has columns")]
    values = dict(row.values)
    errors: list[tuple[str, str]] = []
    for name in bool_fields:
        raw = values.get(name)
        if isinstance(raw, str):
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                values[name] = True
            elif lowered in _FALSE:
                values[name] = False
            else:
                errors.append((name, f"{raw!r} is not yes/no"))
    if errors:
        return None, errors
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return msgspec.convert(values, struct_type, strict=False), []
    except msgspec.ValidationError as exc:
        message = str(exc)
        field_match = re.search(r"at `\$\.([A-Za-z0-9_]+)", message)
        name = field_match.group(1) if field_match else "row"
        unknown = re.search(r"unknown field `([^`]+)`", message)
        if unknown:
            return None, [(unknown.group(1), "unknown field")]
        missing = re.search(r"missing required field `([^`]+)`", message)
        if missing:
            return None, [(missing.group(1), "is required")]
        return None, [(name, message.split(" - at ")[0])]
