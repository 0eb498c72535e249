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
from litestar import Litestar, Request, post
from litestar.datastructures import UploadFile
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from msp_platform.kit.errors import (
    BadRequest,
    FieldError,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    problem_type,
)

MAX_ROWS = 10_000
# The default of MSP_IMPORT_MAX_BODY_BYTES (``Settings.import_max_body_bytes``), which ``import_post`` applies.
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
    # A row reported ``valid`` (nothing stored): what storing it would have done (created, updated, unchanged).
    would: str | None = None


class ImportReport(msgspec.Struct, kw_only=True):
    mode: str
    dry_run: bool
    committed: bool
    total: int
    created: int
    updated: int
    unchanged: int
    # Rows that are fine but were not stored (a dry run, or an atomic import refused because of other rows).
    valid: int = 0
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
        if not committed:
            # Nothing was stored (a dry run, or an atomic import with bad rows): a good row says ``valid`` and
            # ``would`` says what storing it does. No id of a row that would be created: it never existed.
            rows = [
                o
                if o.status == RowStatus.error
                else RowOutcome(
                    row=o.row,
                    status=RowStatus.valid,
                    key=o.key,
                    id=o.id if o.status != RowStatus.created else None,
                    would=o.status,
                )
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
            valid=count(RowStatus.valid),
            failed=count(RowStatus.error),
            rows=rows,
        )

    def finish(self) -> ImportReport:
        """The report to return; raises ImportFailed for an atomic import with bad rows."""
        if self.mode is ImportMode.atomic and self.any_failed:
            raise ImportFailed(self.build(committed=False))
        return self.build(committed=not self.dry_run)


# --- the route ----------------------------------------------------------------------------------------------


class import_post(post):  # used as a decorator, like litestar's ``post``
    """``@post`` for a bulk import: its request body limit is the app's MSP_IMPORT_MAX_BODY_BYTES
    (``Settings.import_max_body_bytes``) instead of the general MSP_REQUEST_MAX_BODY_BYTES. Set when the
    handler is registered with an app, so each app applies its own settings."""

    def on_registration(self, app: Litestar) -> None:
        settings = app.state.get("settings")
        limit = getattr(settings, "import_max_body_bytes", None)
        self.request_max_body_size = limit if isinstance(limit, int) else IMPORT_MAX_BODY_BYTES
        super().on_registration(app)


def import_operation(
    columns: Sequence[str], required: Sequence[str], *, bool_columns: Iterable[str] = ()
) -> type[Operation]:
    """An ``operation_class`` documenting an import's request body (the handler reads the body itself, so
    Litestar cannot infer it): CSV, JSON rows (an array or ``{"rows": [...]}``) and a multipart ``file``."""
    flags = set(bool_columns)

    def cell(name: str) -> Schema:
        if name in flags:
            return Schema(type=[OpenAPIType.BOOLEAN, OpenAPIType.STRING, OpenAPIType.NULL])
        return Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL])

    row = Schema(
        type=OpenAPIType.OBJECT,
        properties={name: cell(name) for name in columns},
        required=list(required),
        additional_properties=False,
    )
    rows = Schema(type=OpenAPIType.ARRAY, items=row, max_items=MAX_ROWS)
    csv_file = Schema(
        type=OpenAPIType.STRING,
        content_media_type="text/csv",
        description=f"A header line naming the columns ({', '.join(columns)}), then one line per row. UTF-8 "
        "unless a byte-order mark (UTF-8, UTF-16, UTF-32) or `charset=` says otherwise.",
    )
    body = RequestBody(
        required=True,
        description=f"Up to {MAX_ROWS:,} rows, as CSV, JSON or a multipart file upload. The body may be as large "
        "as MSP_IMPORT_MAX_BODY_BYTES (25 MB by default); a larger one gets 413.",
        content={
            "text/csv": OpenAPIMediaType(schema=csv_file),
            "application/json": OpenAPIMediaType(
                schema=Schema(
                    one_of=[
                        rows,
                        Schema(type=OpenAPIType.OBJECT, properties={"rows": rows}, required=["rows"]),
                    ]
                )
            ),
            "multipart/form-data": OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.OBJECT, properties={"file": csv_file}, required=["file"])
            ),
        },
    )

    @dataclass
    class ImportOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return ImportOperation


# --- reading ------------------------------------------------------------------------------------------------


def _normalize_header(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one). The codecs named here
# drop the mark while decoding.
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def _bom_encoding(data: bytes) -> str | None:
    """The encoding a byte-order mark announces (Excel's "Unicode Text" and many exports write UTF-16 with
    one), or None."""
    for mark, encoding in _BOMS:
        if data.startswith(mark):
            return encoding
    return None


def _looks_like_utf16(data: bytes) -> bool:
    sample = data[:200]
    return len(sample) >= 4 and sample.count(0) * 3 >= len(sample)


def parse_csv(
    data: bytes, *, charset: str | None, columns: Sequence[str], required: Sequence[str] = ()
) -> list[SourceRow]:
    sniffed = _bom_encoding(data) if charset is None else None
    encoding = (sniffed or charset or "utf-8-sig").lower()
    if encoding in {"utf-8", "utf8"}:
        encoding = "utf-8-sig"  # Excel writes a byte-order mark
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise UnsupportedMediaType(f"Unknown charset {charset!r}.") from exc
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        name = sniffed or charset or "UTF-8"
        hint = (
            " It looks like UTF-16 without a byte-order mark: name it, e.g. text/csv; charset=utf-16le."
            if charset is None and _looks_like_utf16(data)
            else ""
        )
        raise ValidationFailed(
            f"The file is not valid {name} (byte {exc.start}, line {line}). Save it as 'CSV UTF-8', or name "
            f"its encoding: Content-Type: text/csv; charset=windows-1252.{hint}",
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
