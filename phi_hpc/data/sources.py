"""Input readers: every supported input turned into a stream of (text, origin) documents.

Supported, mixed freely on one command line:

* ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` (also ``.json.gz``/``.ndjson``...): one JSON object per
  line, text under ``text_key``. Compressed files are streamed, never fully decompressed in memory.
* ``.parquet``: the ``text_key`` column, read batch by batch.
* directories: every file matching ``glob`` (sorted, so the order is the same on every machine) is
  one document; a directory where nothing matches ``glob`` is read as a folder of dataset shards
  (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.ndjson``, ``.parquet``, mixed freely: the extension
  decides how each is read). Any other single file given explicitly is one document too.

Nothing bad is dropped silently: a line that is not JSON, bytes that are not UTF-8, a truncated
compressed stream, a record without the text key, an empty file each become a :class:`BadInput`
with ``file:line`` (for parquet the "line" is the 1-based row; ``file`` alone means the whole file).
The caller decides whether that is fatal (``--strict``) or counted and reported.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from phi_hpc.errors import UsageError

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
DATASET_SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".parquet")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One file (or one piece of a big file) of the shard plan: where, how to read it, and its size
    (shards are balanced by bytes).

    A big uncompressed ``.jsonl`` is split into byte ranges ``[start, end)``: a piece owns the lines
    that *begin* inside its range. A big ``.parquet`` is split by row groups ``[start, end)``.
    Compressed streams cannot be entered in the middle, so they are always read whole.
    """

    path: str
    kind: str  # "jsonl" | "parquet" | "source"
    compression: str | None
    size: int  # bytes this piece covers (the whole file's size when not split)
    start: int = 0
    end: int | None = None  # None: to the end of the file

    @property
    def is_whole_file(self) -> bool:
        return self.start == 0 and self.end is None


def split_input(source: InputFile, piece_bytes: int) -> list[InputFile]:
    """Pieces of about ``piece_bytes`` for files that can be read from the middle; else the file."""
    if source.compression is None and source.kind == "jsonl" and source.size > piece_bytes:
        bounds = list(range(0, source.size, piece_bytes)) + [source.size]
        return [InputFile(source.path, source.kind, None, hi - lo, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    if source.kind == "parquet" and source.size > piece_bytes:
        return _split_parquet(source, piece_bytes)
    return [source]


def _split_parquet(source: InputFile, piece_bytes: int) -> list[InputFile]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(source.path).metadata
    except (pa.ArrowException, OSError):
        return [source]  # unreadable: the reader reports it as bad input
    pieces, first, size = [], 0, 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        if size >= piece_bytes or group == metadata.num_row_groups - 1:
            pieces.append(InputFile(source.path, "parquet", None, size, first, group + 1))
            first, size = group + 1, 0
    return pieces if len(pieces) > 1 else [source]


@dataclass(frozen=True)
class Document:
    text: str
    origin: str  # "file:line" (or just "file" for a whole-file document)


@dataclass(frozen=True)
class BadInput:
    path: str
    line: int | None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def to_dict(self) -> dict:
        return {"where": self.where, "reason": self.reason}


def classify(path: Path) -> tuple[str, str | None]:
    """(kind, compression) from the file name."""
    name = path.name.lower()
    compression = None
    for suffix, algo in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = algo, name[: -len(suffix)]
            break
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(".parquet") and compression is None:
        return "parquet", None
    return "source", compression


def expand_inputs(inputs: list[str], glob: str) -> list[InputFile]:
    """Turn the command line's inputs into an ordered file list (directories expanded, sorted)."""
    if not inputs:
        raise UsageError("no INPUT given", "pass files or directories to prepare, e.g. phi-hpc prepare data/ ...")
    files: list[InputFile] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            candidates = _directory_files(path, raw, glob)
        elif path.is_file():
            candidates = [path]
        else:
            raise UsageError(f"input {raw} does not exist", "check the INPUT paths")
        for candidate in candidates:
            kind, compression = classify(candidate)
            files.append(InputFile(str(candidate), kind, compression, candidate.stat().st_size))
    return files


def is_dataset_shard(path: Path) -> bool:
    """A file a downloaded dataset is made of: ``.jsonl``/``.ndjson`` (optionally ``.gz``/``.zst``)
    or ``.parquet``. A plain ``.json`` is not one (source trees are full of config ``.json`` files)."""
    kind, _ = classify(path)
    name = path.name.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return kind == "parquet" or (kind == "jsonl" and name.endswith((".jsonl", ".ndjson")))


def _directory_files(path: Path, raw: str, glob: str) -> list[Path]:
    """A folder's files, sorted (the same order on every machine): those matching ``glob`` (a folder
    of source files, as always); if none does, its dataset shards, of any mix of formats (the usual
    layout of a downloaded dataset), each read as its extension says."""
    matches = sorted(p for p in path.glob(glob) if p.is_file())
    if not matches:
        matches = sorted(p for p in path.glob("**/*") if p.is_file() and is_dataset_shard(p))
    if not matches:
        raise UsageError(
            f"input directory {raw}: no files match {glob!r} and no dataset shards "
            f"({', '.join(DATASET_SHARD_SUFFIXES)}) are in it",
            "check the folder, or pick other files with e.g. --set glob='**/*.js'",
        )
    return matches


# -- readers -------------------------------------------------------------------------------------

OnBad = Callable[[BadInput], None]


def read_documents(source: InputFile, text_key: str, on_bad: OnBad) -> Iterator[Document]:
    """Yield the good documents of one input file; report every problem through ``on_bad``."""
    try:
        if source.kind == "jsonl":
            yield from _read_jsonl(source, text_key, on_bad)
        elif source.kind == "parquet":
            yield from _read_parquet(source, text_key, on_bad)
        else:
            yield from _read_source_file(source, on_bad)
    except OSError as exc:
        on_bad(BadInput(source.path, None, f"unreadable: {exc.strerror or exc}"))


def _read_source_file(source: InputFile, on_bad: OnBad) -> Iterator[Document]:
    try:
        chunks = list(_decompressed_chunks(source))
    except _Truncated as exc:
        on_bad(BadInput(source.path, None, str(exc)))
        return
    data = b"".join(chunks)
    if not data.strip():
        on_bad(BadInput(source.path, None, "empty file"))
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        on_bad(BadInput(source.path, line, f"invalid UTF-8 (byte {exc.start})"))
        return
    yield Document(text, source.path)


def _read_jsonl(source: InputFile, text_key: str, on_bad: OnBad) -> Iterator[Document]:
    if source.is_whole_file:
        numbered = enumerate(_lines(source), start=1)
    else:
        numbered = _lines_in_range(source)
    line_no = 0
    saw_content = False
    try:
        for line_no, raw in numbered:
            if not raw.strip():
                continue
            saw_content = True
            document = _parse_record(raw, source.path, line_no, text_key, on_bad)
            if document is not None:
                yield document
    except _Truncated as exc:
        on_bad(BadInput(source.path, line_no + 1, str(exc)))
        return
    if not saw_content and source.is_whole_file:
        on_bad(BadInput(source.path, None, "empty file"))


def _lines_in_range(source: InputFile) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for the lines of an uncompressed file that begin in ``[start, end)``."""
    with open(source.path, "rb") as handle:
        line_no = 1
        if source.start > 0:
            # Line numbers stay those of the whole file: count the newlines before the range
            # (a C loop over the bytes, fast), then skip the line that straddles the start.
            remaining = source.start - 1
            while remaining > 0:
                block = handle.read(min(_READ_CHUNK, remaining))
                if not block:
                    break
                line_no += block.count(b"\n")
                remaining -= len(block)
            if handle.read(1) != b"\n":  # byte start-1 is not a newline: we are inside a line
                handle.readline()
                line_no += 1
            else:
                line_no += 1
        position = handle.tell()
        end = source.end if source.end is not None else float("inf")
        while position < end:
            raw = handle.readline()
            if not raw:
                return
            yield line_no, raw.rstrip(b"\n")
            line_no += 1
            position += len(raw)


def _parse_record(raw: bytes, path: str, line_no: int, text_key: str, on_bad: OnBad) -> Document | None:
    def bad(reason: str) -> None:
        on_bad(BadInput(path, line_no, reason))

    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return bad(f"invalid UTF-8 (byte {exc.start} of the line)")
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return bad(f"bad JSON ({exc.msg})")
    if not isinstance(record, dict) or text_key not in record:
        return bad(f"missing text key {text_key!r}")
    text = record[text_key]
    if not isinstance(text, str):
        return bad(f"text key {text_key!r} is {type(text).__name__}, not a string")
    return _checked_text(text, path, line_no, on_bad)


def _checked_text(text: str, path: str, line_no: int | None, on_bad: OnBad) -> Document | None:
    if not text.strip():
        on_bad(BadInput(path, line_no, "empty text"))
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        on_bad(BadInput(path, line_no, "invalid Unicode (lone surrogate escape)"))
        return None
    return Document(text, f"{path}:{line_no}" if line_no is not None else path)


def _read_parquet(source: InputFile, text_key: str, on_bad: OnBad) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as exc:
        on_bad(BadInput(source.path, None, f"unreadable parquet ({exc})"))
        return
    if text_key not in parquet.schema_arrow.names:
        columns = ", ".join(parquet.schema_arrow.names)
        on_bad(BadInput(source.path, None, f"no column {text_key!r} (columns: {columns})"))
        return
    if parquet.metadata.num_rows == 0:
        on_bad(BadInput(source.path, None, "empty file"))
        return
    groups = range(source.start, source.end if source.end is not None else parquet.metadata.num_row_groups)
    row = sum(parquet.metadata.row_group(g).num_rows for g in range(groups.start))  # rows before this piece
    try:
        for batch in parquet.iter_batches(batch_size=4096, columns=[text_key], row_groups=list(groups)):
            for value in batch.column(0).to_pylist():
                row += 1
                if isinstance(value, bytes):
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError:
                        on_bad(BadInput(source.path, row, "invalid UTF-8"))
                        continue
                if not isinstance(value, str):
                    on_bad(BadInput(source.path, row, f"missing text (value is {type(value).__name__})"))
                    continue
                document = _checked_text(value, source.path, row, on_bad)
                if document is not None:
                    yield document
    except (pa.ArrowException, OSError) as exc:
        on_bad(BadInput(source.path, row + 1, f"unreadable parquet ({exc})"))


# -- byte streams --------------------------------------------------------------------------------


class _Truncated(Exception):
    """The compressed stream ended before its end marker: the file was cut off."""


def _lines(source: InputFile) -> Iterator[bytes]:
    pending = b""
    for chunk in _decompressed_chunks(source):
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _decompressed_chunks(source: InputFile) -> Iterator[bytes]:
    with open(source.path, "rb") as handle:
        if source.compression is None:
            while chunk := handle.read(_READ_CHUNK):
                yield chunk
        elif source.compression == "gzip":
            yield from _gzip_chunks(handle)
        else:
            yield from _zstd_chunks(handle)


def _gzip_chunks(handle) -> Iterator[bytes]:
    try:
        with gzip.GzipFile(fileobj=handle) as stream:
            while chunk := stream.read(_READ_CHUNK):
                yield chunk
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise _Truncated(f"truncated or corrupt gzip stream ({exc})") from None


def _zstd_chunks(handle) -> Iterator[bytes]:
    """Stream every frame of a .zst file; a stream that stops mid-frame is reported, not ignored.

    (``ZstdDecompressor.stream_reader`` silently returns nothing for a cut-off frame, so we drive a
    decompression object per frame and check that each one reached its end marker.)
    """
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    decompressor = dctx.decompressobj()
    started = False
    try:
        while chunk := handle.read(_READ_CHUNK):
            while chunk:
                started = True
                out = decompressor.decompress(chunk)
                if out:
                    yield out
                if decompressor.eof:
                    chunk = decompressor.unused_data
                    decompressor = dctx.decompressobj()
                    started = False
                else:
                    chunk = b""
    except zstandard.ZstdError as exc:
        raise _Truncated(f"corrupt zstd stream ({exc})") from None
    if started:
        raise _Truncated("truncated zstd stream (ends mid-frame)")


def file_fingerprint(source: InputFile) -> dict:
    """What identifies an input's content cheaply (a rerun after the file changed must not reuse work)."""
    stat = os.stat(source.path)
    return {"path": source.path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
