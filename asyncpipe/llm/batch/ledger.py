"""The record of an output directory's batches: ``batches/batches.json``.

One entry per request file (a *part*): its file names, how many requests it holds, the uploaded file's
id, the batch id, the provider's last status and ``request_counts``, and where it stands here:

- ``written``: the request file is on disk, nothing sent yet;
- ``exported``: written for an offline engine (``--batch-api export``); results come back by import;
- ``uploaded``: the file is uploaded (``input_file_id`` known), the batch perhaps not yet created;
- ``submitted``: the batch exists (``batch_id`` known): poll it, never create another;
- ``done``: its results are in the response cache (an expired part names the part resubmitting the rest);
- ``failed`` / ``cancelled``: stopped by the provider or the user; a later run sends its open lines anew.

The file is replaced atomically (temporary file, fsync, rename) after every change, and every change that
precedes a wait (upload, batch creation) is recorded before the wait: a killed run leaves a record that
says exactly which batches exist.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from asyncpipe.atomic import write_json_atomic

State = Literal["written", "exported", "uploaded", "submitted", "done", "failed", "cancelled"]
LEDGER = "batches.json"
FORMAT = 1


@dataclass
class Part:
    name: str
    requests: int
    state: State = "written"
    input_file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    output_file_id: str | None = None
    error_file_id: str | None = None
    message: str | None = None
    #: rows refused for their content, custom id → reason (unscored, as online; not sent again this run)
    refused: dict[str, str] = field(default_factory=dict)
    #: lines answered with an error the usual retry policy owns (sent online in the final pass)
    to_retry: int = 0
    #: the part that resubmitted this one's unfinished lines (after expiry)
    resubmitted_as: str | None = None
    #: the answers its lines ask for (a LabelSet key): "A/B" to classify, "yes/no/fold-case" to check
    #: a property; a ledger from before property checks went by batch holds "A/B" only
    labels: str = "A/B"

    @property
    def open(self) -> bool:
        """Sent, or to be sent, and not finished: the runner still owes it a wait."""
        return self.state in ("written", "uploaded", "submitted")


class Ledger:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LEDGER
        self.parts: list[Part] = []
        if self.path.is_file():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            known = {f.name for f in fields(Part)}
            self.parts = [Part(**{k: v for k, v in p.items() if k in known}) for p in data.get("parts", [])]

    def requests_path(self, part: Part) -> Path:
        return self.directory / f"{part.name}.jsonl"

    def ids_path(self, part: Part) -> Path:
        return self.directory / f"{part.name}.ids"

    def next_number(self) -> int:
        numbers = [int(p.name.rsplit("-", 1)[1]) for p in self.parts if p.name.rsplit("-", 1)[-1].isdigit()]
        return max(numbers, default=0) + 1

    def add(self, part: Part) -> None:
        self.parts.append(part)
        self.save()

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"format": FORMAT, "parts": [asdict(p) for p in self.parts]}
        write_json_atomic(self.path, data)

    def summary(self) -> dict[str, Any]:
        """For run.json and the progress display: batches by state, and their request counts."""
        sent = [p for p in self.parts if p.batch_id is not None]
        return {
            "batches": len(sent),
            "open": sum(1 for p in self.parts if p.open),
            "requests": sum(p.requests for p in self.parts),
            "completed": sum(p.counts.get("completed", 0) for p in sent),
            "failed": sum(p.counts.get("failed", 0) for p in sent),
            "total": sum(p.counts.get("total", 0) or p.requests for p in sent),
            "parts": [
                {
                    "name": p.name,
                    "batch_id": p.batch_id,
                    "input_file_id": p.input_file_id,
                    "state": p.state,
                    "status": p.batch_status,
                    "counts": p.counts,
                }
                for p in self.parts
            ],
        }
