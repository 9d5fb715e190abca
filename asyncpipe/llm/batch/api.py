"""The Batch API over HTTP: files and batch jobs on an OpenAI-compatible endpoint.

Endpoints (``BASE`` ends in ``/v1``): ``POST BASE/files`` (multipart, ``purpose=batch``),
``POST BASE/batches``, ``GET BASE/batches``, ``GET BASE/batches/{id}``, ``POST BASE/batches/{id}/cancel``
and ``GET BASE/files/{id}/content``. Errors map as online (:mod:`asyncpipe.llm.openai_http`): 429 and
5xx and broken connections are :class:`~asyncpipe.errors.RetryableAPIError` (the caller keeps polling),
401/403/404 and other refusals are :class:`~asyncpipe.errors.FatalAPIError`.

Uploads stream from disk and result files are read line by line, so a 200 MB file is never held whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from asyncpipe.errors import FatalAPIError, RetryableAPIError
from asyncpipe.llm.http_errors import RETRYABLE_STATUS, error_fields

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
#: statuses after which a batch changes no more
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: a whole upload may take this long (a 200 MB file over a slow line)
UPLOAD_TIMEOUT = 3600.0


class BatchAPI:
    def __init__(self, base_url: str, headers: dict[str, str], *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=self._timeout)
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            async with self._get_session().request(method, url, **kwargs) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise RetryableAPIError(f"{method} {url}: no answer within {self._timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise RetryableAPIError(f"{method} {url}: connection error: {type(exc).__name__}") from None
        if status == 200:
            try:
                body = json.loads(raw)
            except ValueError:
                raise RetryableAPIError(f"{method} {url}: invalid JSON in a 200 answer") from None
            if isinstance(body, dict):
                return body
            raise RetryableAPIError(f"{method} {url}: the answer is not a JSON object")
        raise _error(method, url, status, raw)

    async def upload(self, path: Path) -> str:
        """Upload a request file (purpose ``batch``); its file id."""
        with path.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", handle, filename=path.name, content_type="application/jsonl")
            body = await self._request(
                "POST", "/files", data=form, timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT)
            )
        return str(body["id"])

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        return await self._request(
            "POST",
            "/batches",
            json={
                "input_file_id": input_file_id,
                "endpoint": ENDPOINT,
                "completion_window": COMPLETION_WINDOW,
                "metadata": metadata,
            },
        )

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/batches/{batch_id}/cancel")

    async def find(self, input_file_id: str) -> dict[str, Any] | None:
        """The most recent batch made from ``input_file_id`` (a run killed between creating a batch and
        recording it finds it here instead of creating a second one)."""
        body = await self._request("GET", "/batches", params={"limit": "100"})
        for batch in body.get("data") or []:
            if isinstance(batch, dict) and batch.get("input_file_id") == input_file_id:
                return batch
        return None

    async def lines(self, file_id: str) -> AsyncIterator[bytes]:
        """The lines of a result file, read as they arrive."""
        url = f"{self.base_url}/files/{file_id}/content"
        try:
            async with self._get_session().get(url) as response:
                if response.status != 200:
                    raise _error("GET", url, response.status, await response.read())
                pending = b""
                async for chunk in response.content.iter_chunked(1 << 20):
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending
        except TimeoutError:
            raise RetryableAPIError(f"GET {url}: no answer within {self._timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise RetryableAPIError(f"GET {url}: connection error: {type(exc).__name__}") from None


def _error(method: str, url: str, status: int, raw: bytes) -> Exception:
    message, _kind, code = error_fields(raw)
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableAPIError(f"{method} {url}: HTTP {status}: {message}", status=status)
    hint = "; check OPENAI_API_KEY" if status in (401, 403) else ""
    if status in (404, 405) and url.endswith(("/files", "/batches")):
        hint = "; this endpoint has no Batch API (for vLLM use --batch-api export and vllm run-batch)"
    return FatalAPIError(f"{method} {url}: HTTP {status}: {message}{hint}", status=status, code=code)
