"""Read a dataset file into a polars frame, with one clear line for every way a file can be wrong."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import polars as pl

from asyncpipe.errors import UserError

SUPPORTED = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")
TEXT_COLUMN_CANDIDATES = ("answer", "response", "completion", "output", "text")


def read_table(path: Path) -> pl.DataFrame:
    """Load ``path`` (csv, jsonl/ndjson, json list of objects, parquet). Raises UserError on bad input."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a data file ({', '.join(SUPPORTED)})")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise UserError(
            f"{path}: unsupported file type '{suffix or '(none)'}'; use one of {', '.join(SUPPORTED)}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            # Editors on Windows start UTF-8 files with a byte-order mark; it is not part of the data.
            raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
            _check_utf8(path, raw)
            if suffix == ".csv":
                frame = _read_csv(path, raw)
            elif suffix == ".json":
                frame = _read_json_list(path, raw)
            else:
                frame = _read_jsonl(path, raw)
    except UserError:
        raise
    except Exception as exc:  # polars raises many kinds; the user needs one line
        raise UserError(f"{path}: cannot read as {suffix[1:]}: {_first_line(exc)}") from None
    if frame.height == 0:
        raise UserError(f"{path}: has no rows")
    return frame


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_utf8(path: Path, raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}: not valid UTF-8 (byte {exc.start}, line {line}); re-encode it as UTF-8"
        ) from None


def _read_csv(path: Path, raw: bytes) -> pl.DataFrame:
    # Every column as text: completions like "1" or "NaN" must stay the strings they were.
    return pl.read_csv(raw, infer_schema=False)


def _read_json_list(path: Path, raw: bytes) -> pl.DataFrame:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise UserError(f"{path}: expected a JSON list of objects (one object per row)")
    if not data:
        raise UserError(f"{path}: has no rows")
    return pl.from_dicts(data, infer_schema_length=None)


def _read_jsonl(path: Path, raw: bytes) -> pl.DataFrame:
    try:
        return pl.read_ndjson(raw, infer_schema_length=None)
    except Exception:
        pass
    # polars does not say which line is bad; find it, so the user can fix the file.
    rows = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        rows.append(value)
    if not rows:
        raise UserError(f"{path}: has no rows")
    return pl.from_dicts(rows, infer_schema_length=None)


def choose_text_column(
    a: pl.DataFrame, b: pl.DataFrame, requested: str | None, names: tuple[str, str]
) -> str:
    """The column holding the text to compare: ``requested``, or the first usual name both files have."""
    if requested:
        for frame, name, side in zip((a, b), names, "AB", strict=True):
            if requested not in frame.columns:
                hint = "; if B names it differently, add --column-b NAME" if side == "B" else ""
                raise UserError(
                    f"{name}: no column '{requested}'; its columns are: {', '.join(frame.columns)}{hint}"
                )
        return requested
    for candidate in TEXT_COLUMN_CANDIDATES:
        if candidate in a.columns and candidate in b.columns:
            return candidate
    raise UserError(
        "no text column found in both files (looked for "
        f"{', '.join(TEXT_COLUMN_CANDIDATES)}); pass --column NAME. "
        f"A has: {', '.join(a.columns)}; B has: {', '.join(b.columns)}"
    )


def text_values(frame: pl.DataFrame, column: str, name: str, *, missing_as_empty: bool = False) -> list[str]:
    """The column as strings. Null or NaN values are an error naming the rows, not silent empty rows,
    unless ``missing_as_empty`` (context columns, where a gap is harmless): then they become ""."""
    series = frame.get_column(column)
    bad = series.is_null() | series.is_nan() if series.dtype.is_float() else series.is_null()
    if missing_as_empty:
        return [
            "" if missing else text for missing, text in zip(bad.to_list(), _as_strings(series), strict=True)
        ]
    if bad.any():
        rows = [int(i) for i in bad.arg_true().head(5).to_list()]
        count = int(bad.sum())
        raise UserError(
            f"{name}: {count} row(s) have no text in column '{column}' (rows {', '.join(map(str, rows))}"
            f"{', …' if count > 5 else ''}, 0-based); remove or fill them"
        )
    return _as_strings(series)


def _as_strings(series: pl.Series) -> list[str]:
    if series.dtype == pl.Utf8:
        return series.to_list()
    if series.dtype in (pl.List, pl.Struct) or isinstance(series.dtype, (pl.List, pl.Struct)):
        return [json.dumps(v, ensure_ascii=False) for v in series.to_list()]
    return [str(v) for v in series.to_list()]


def rename_side_column(frame: pl.DataFrame, own: str, common: str, name: str, flag: str) -> pl.DataFrame:
    """B's column ``own`` under A's name ``common`` (``--column-b``, ``--context-column-b``), so that one
    layout renders both files; a column of B already called ``common`` gives way."""
    if own not in frame.columns:
        raise UserError(
            f"{name}: no column '{own}' (from {flag}); its columns are: {', '.join(frame.columns)}"
        )
    if own == common:
        return frame
    return frame.drop(common, strict=False).rename({own: common})
