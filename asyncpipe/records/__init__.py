"""The records of a run, in memory and on disk: each defined once, with its one writer and one reader.

Every command, ``--resume``, ``pairs`` and the report meet here; no other module opens ``run.json``,
``steps.jsonl`` or ``pairs.json``.

- :class:`Summary`: how a classifier did on a set of rows (the keys of :func:`asyncpipe.metrics.summarize`).
- :class:`StepRecord`: one line of ``steps.jsonl``: a describe step and how its description did.
- :class:`RunRecord`: ``run.json``: what one ``compare``, ``classify`` or ``properties`` run (its ``kind``)
  did and how far it got. Every command writes the same shape; fields that do not apply stay empty.
- :class:`PairRecord`: one pair of an ``asyncpipe pairs`` run; :class:`PairsRecord`: its ``pairs.json``
  (and ``pairs.parquet``, one flat row per pair).

Reading is lenient wherever a reader can go on, since the report renders a directory that is still being
written: a missing field takes its default, a wrongly typed value is dropped, an unknown key is ignored.
A file that is no record at all (not a JSON object, a format newer than this asyncpipe reads, an unknown
kind) raises :class:`RecordError` with one line naming the file.

Adding a field: give it a default (so older files still read) and add it to its record's ``to_dict``
and ``from_dict``. Nothing else needs to change.
"""

from asyncpipe.records.pairs_summary import (
    PAIRS_FORMAT,
    FileRef,
    HeldOut,
    PairRecord,
    PairsRecord,
    PairStatus,
    held_out_scores,
    read_pairs,
    write_pairs,
)
from asyncpipe.records.run import (
    RUN_FORMAT,
    CheckedFile,
    LabelInfo,
    RunKind,
    RunRecord,
    RunStatus,
    read_run,
    write_run,
)
from asyncpipe.records.steps import Miss, Race, StepRecord, read_steps, write_steps
from asyncpipe.records.summary import Finals, Summary, finals_from_dict, finals_to_dict
from asyncpipe.records.values import RecordError

__all__ = [
    "PAIRS_FORMAT",
    "RUN_FORMAT",
    "CheckedFile",
    "FileRef",
    "Finals",
    "HeldOut",
    "LabelInfo",
    "Miss",
    "PairRecord",
    "PairStatus",
    "PairsRecord",
    "Race",
    "RecordError",
    "RunKind",
    "RunRecord",
    "RunStatus",
    "StepRecord",
    "Summary",
    "finals_from_dict",
    "finals_to_dict",
    "held_out_scores",
    "read_pairs",
    "read_run",
    "read_steps",
    "write_pairs",
    "write_run",
    "write_steps",
]
