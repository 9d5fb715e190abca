"""Result lines into the response cache, exactly as the online client stores an answer.

A result line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``
(OpenAI's output and error files, ``vllm run-batch``'s output). The custom id is the request's cache
key, so a line's answer lands where the online client would have put it, parsed by the same code
(:func:`~asyncpipe.llm.openai_http.label_score`, with the labels the request asked for: 'A'/'B' to
classify, 'yes'/'no' to check a property), and the rest of the pipeline cannot tell the two apart.

What a line can say, and what becomes of it:

- status 200 with logprobs: stored in the cache (p(A), or unscored with the reason, as online);
- status 400/413/422: the request was refused for what it holds: the row is unscored with the reason,
  and it is not sent again in this run (not cached, so a later run asks again, as online);
- ``error.code`` ``batch_expired`` / ``batch_cancelled``: never ran; the runner resubmits it;
- anything else (5xx, 429, a 200 without logprobs, a line that cannot be read): left for the usual retry
  policy, which sends it online in the final pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncpipe.errors import RetryableAPIError
from asyncpipe.llm.cache import ResponseCache
from asyncpipe.llm.client import score_json
from asyncpipe.llm.http_errors import REJECTED_STATUS, error_fields
from asyncpipe.llm.labels import AB, LabelSet
from asyncpipe.llm.openai_http import label_score
from asyncpipe.llm.stats import RunStats

NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})


@dataclass
class Imported:
    answered: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    to_retry: int = 0
    not_run: int = 0
    no_logprobs: int = 0
    #: lines whose custom id is not a request of this run (another run's file), ignored
    foreign: int = 0
    unreadable: int = 0
    last_error: str | None = None


def import_line(
    raw: bytes,
    cache: ResponseCache,
    stats: RunStats,
    into: Imported,
    labels_of: Callable[[str], LabelSet | None] = lambda _custom_id: AB,
) -> None:
    """Read one result line into the cache; ``labels_of`` says which answers a custom id asked for ('A'
    or 'B', 'yes' or 'no'), None for a line that is no request of this pass."""
    try:
        line = json.loads(raw)
        custom_id = line["custom_id"]
    except (ValueError, KeyError, TypeError):
        into.unreadable += 1
        return
    labels = labels_of(custom_id) if isinstance(custom_id, str) else None
    if labels is None:
        into.foreign += 1
        return
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    if response is None:
        code = (error or {}).get("code")
        if code in NOT_RUN:
            into.not_run += 1
        else:
            into.to_retry += 1
            into.last_error = f"{code}: {(error or {}).get('message')}"
        return
    status = response.get("status_code")
    body = response.get("body")
    stats.requests += 1
    if status == 200 and isinstance(body, dict):
        try:
            score = label_score(body, labels)
        except RetryableAPIError as exc:
            into.to_retry += 1
            into.no_logprobs += exc.no_logprobs
            into.last_error = str(exc)
            return
        stats.add_usage(score.usage)
        cache.put(custom_id, "score", score_json(score))
        into.answered += 1
        return
    message, _kind, code = error_fields(json.dumps(body).encode() if body is not None else b"")
    if status in REJECTED_STATUS:
        stats.failed += 1
        label = f"HTTP {status}" + (f" {code}" if code else "")
        into.refused[custom_id] = f"refused by the API ({label}): {message}"
        return
    into.to_retry += 1
    into.last_error = f"HTTP {status}: {message}"
