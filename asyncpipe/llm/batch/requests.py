"""Request files for the Batch API and ``vllm run-batch``, written streaming and split at the limits.

One line per request: ``{"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": BODY}``
where ``BODY`` is byte for byte what the online client would POST and ``KEY`` is the response-cache key
of that request. A file is closed and a new one started before it would pass ``max_requests`` lines or
``max_bytes`` bytes (OpenAI: 50,000 and 200 MB; ``config/default.yaml``). Beside each request file, a
``.ids`` file lists its custom ids, one a line: the record of what a batch covers once the request file
itself has been deleted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from asyncpipe.llm.batch.api import ENDPOINT

_HEAD = b'{"custom_id":"'
_MIDDLE = b'","method":"POST","url":"' + ENDPOINT.encode() + b'","body":'


def request_line(custom_id: str, body: bytes) -> bytes:
    return _HEAD + custom_id.encode("ascii") + _MIDDLE + body + b"}\n"


def custom_id_of(line: bytes) -> str:
    """The custom id of a line :func:`request_line` wrote (without parsing the body)."""
    start = len(_HEAD)
    return line[start : line.index(b'"', start)].decode("ascii")


@dataclass(frozen=True)
class WrittenFile:
    name: str  # "requests-0001"
    path: Path  # the .jsonl request file
    ids_path: Path
    requests: int
    bytes: int


def write_request_files(
    items: Iterable[tuple[str, bytes]],
    directory: Path,
    *,
    first_number: int,
    max_requests: int,
    max_bytes: int,
    prefix: str = "requests",
) -> Iterator[WrittenFile]:
    """Write ``(custom_id, body)`` items into numbered files in ``directory``; yield each file once it is
    complete and on disk (flushed and fsynced), so the caller can record it before going on."""
    directory.mkdir(parents=True, exist_ok=True)
    number = first_number
    handle = ids = None
    count = size = 0
    name = ""

    def close() -> WrittenFile:
        assert handle is not None and ids is not None
        for h in (handle, ids):
            h.flush()
            os.fsync(h.fileno())
            h.close()
        return WrittenFile(name, directory / f"{name}.jsonl", directory / f"{name}.ids", count, size)

    try:
        for custom_id, body in items:
            line = request_line(custom_id, body)
            if handle is not None and (count >= max_requests or size + len(line) > max_bytes):
                yield close()
                handle = None
            if handle is None:
                name = f"{prefix}-{number:04d}"
                number += 1
                handle = (directory / f"{name}.jsonl").open("wb")
                ids = (directory / f"{name}.ids").open("w", encoding="ascii")
                count = size = 0
            handle.write(line)
            ids.write(custom_id + "\n")
            count += 1
            size += len(line)
        if handle is not None:
            yield close()
            handle = None
    finally:
        if handle is not None:  # stopped half-way: a partial file is never recorded, so remove it
            handle.close()
            assert ids is not None
            ids.close()
            (directory / f"{name}.jsonl").unlink(missing_ok=True)
            (directory / f"{name}.ids").unlink(missing_ok=True)


def read_ids(path: Path) -> Iterator[str]:
    with path.open(encoding="ascii") as handle:
        for line in handle:
            if line := line.strip():
                yield line


def remaining_lines(path: Path, drop: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """``(custom_id, body)`` of the lines of a request file whose id ``drop(id)`` does not reject."""
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            custom_id = custom_id_of(line)
            if drop(custom_id):
                continue
            body = line[len(_HEAD) + len(custom_id) + len(_MIDDLE) : line.rstrip().rindex(b"}")]
            yield custom_id, body
