"""The fake server's Batch API: files and batch jobs, in OpenAI's wire format (see tests/fake_openai.py).

Each line of a batch is answered as ``POST /v1/chat/completions`` would answer it (the fake's own scorer
and describer), so a batch run and an online run on the same fake get the same answers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from tests.fake_openai import FakeOpenAI


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


@dataclass
class FakeBatches:
    """The Batch API's files and jobs, answering each line as ``/v1/chat/completions`` would."""

    #: line_fault(custom_id, body) -> "server_error" (error file, status 500), "refused" (output, 400),
    #: "no_logprobs" (output, 200 without logprobs), or None
    line_fault: Callable[[str, dict], str | None] | None = None
    #: the first ``expire_batches`` batches expire with only this many lines done
    expire_after: int | None = None
    expire_batches: int = 1
    #: validation fails with this message (every batch)
    fail_validation: str | None = None
    #: while set, batches stay in_progress (a test kills the client meanwhile)
    hold: threading.Event = field(default_factory=threading.Event)
    files: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    #: every line answered through a batch (custom_id, body)
    lines: list[tuple[str, dict]] = field(default_factory=list)
    created: int = 0
    polls: int = 0
    #: answer GET /v1/batches/{id} with HTTP 503 this many times first (the client must keep polling)
    poll_errors: int = 0
    seed: int = 0
    #: False: no Batch endpoints at all (a vLLM or llama.cpp server), every path answers 404
    enabled: bool = True

    def attach(self, fake: FakeOpenAI, app: web.Application) -> None:
        self.fake = fake
        if not self.enabled:
            return
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{id}", self.retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel)

    def _file(self, data: bytes, purpose: str, filename: str) -> dict:
        file_id = f"file-fake{len(self.files) + 1}"
        self.files[file_id] = meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "data": data,
        }
        return meta

    @staticmethod
    def _public(meta: dict) -> dict:
        return {k: v for k, v in meta.items() if k != "data"}

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose not in ("batch", "batch_output", "assistants", "fine-tune") or upload is None:
            return _error(400, "purpose and file are required", "invalid_request_error", None)
        if isinstance(upload, str):
            return _error(400, "file must be a file upload", "invalid_request_error", None)
        data = upload.file.read()
        return web.json_response(self._public(self._file(data, str(purpose), upload.filename or "upload")))

    async def content(self, request: web.Request) -> web.Response:
        meta = self.files.get(request.match_info["id"])
        if meta is None:
            return _error(404, "No such File object", "invalid_request_error", None)
        return web.Response(body=meta["data"], content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        meta = self.files.get(body.get("input_file_id", ""))
        if meta is None or meta["purpose"] != "batch":
            return _error(
                400, "input_file_id must be a file uploaded with purpose batch", "invalid_request_error", None
            )
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "unsupported endpoint or completion_window", "invalid_request_error", None)
        self.created += 1
        batch_id = f"batch_fake{self.created}"
        now = int(time.time())
        self.jobs[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "expires_at": now + 86400,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "_number": self.created,
        }
        return web.json_response(self._job(batch_id))

    def _job(self, batch_id: str) -> dict:
        return {k: v for k, v in self.jobs[batch_id].items() if not k.startswith("_")}

    async def list(self, _request: web.Request) -> web.Response:
        data = [self._job(i) for i in reversed(list(self.jobs))]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def retrieve(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        if batch_id not in self.jobs:
            return _error(404, f"No batch found with id '{batch_id}'.", "invalid_request_error", None)
        self.polls += 1
        if self.poll_errors > 0:
            self.poll_errors -= 1
            return _error(503, "The server is overloaded.", "server_error", None)
        self._advance(self.jobs[batch_id])
        return web.json_response(self._job(batch_id))

    async def cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return _error(404, "No such batch", "invalid_request_error", None)
        if job["status"] in ("validating", "in_progress", "finalizing"):
            job["status"] = "cancelling"
        return web.json_response(self._job(job["id"]))

    def _input(self, job: dict) -> list[dict]:
        text = self.files[job["input_file_id"]]["data"].decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _validate(self, lines: list[dict]) -> str | None:
        if self.fail_validation:
            return self.fail_validation
        ids, models = set(), set()
        for n, line in enumerate(lines, start=1):
            if set(line) != {"custom_id", "method", "url", "body"}:
                return f"line {n}: expected the keys custom_id, method, url, body"
            if line["method"] != "POST" or line["url"] != "/v1/chat/completions":
                return f"line {n}: method must be POST and url /v1/chat/completions"
            if line["custom_id"] in ids:
                return f"line {n}: duplicate custom_id {line['custom_id']}"
            ids.add(line["custom_id"])
            models.add(line["body"].get("model"))
        if len(models) > 1:
            return "all requests in a batch must use the same model"
        return None

    def _advance(self, job: dict) -> None:
        status = job["status"]
        if status == "validating":
            lines = self._input(job)
            if (message := self._validate(lines)) is not None:
                job["status"] = "failed"
                job["errors"] = {
                    "object": "list",
                    "data": [{"code": "invalid_request", "message": message, "param": None, "line": None}],
                }
                return
            job["status"] = "in_progress"
            job["request_counts"]["total"] = len(lines)
        elif status == "in_progress" and not self.hold.is_set():
            job["status"] = "finalizing"
        elif status == "finalizing":
            expire = self.expire_after is not None and job["_number"] <= self.expire_batches
            self._finish(job, "expired" if expire else "completed", self.expire_after if expire else None)
        elif status == "cancelling":
            self._finish(job, "cancelled", 0)

    def _finish(self, job: dict, status: str, done: int | None) -> None:
        lines = self._input(job)
        output, errors = [], []
        for n, line in enumerate(lines):
            custom_id, body = line["custom_id"], line["body"]
            entry = {"id": f"batch_req_{job['_number']}_{n}", "custom_id": custom_id}
            if done is not None and n >= done:
                message = "This request could not be executed before the completion window expired."
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                errors.append({**entry, "response": None, "error": {"code": code, "message": message}})
                continue
            fault = self.line_fault(custom_id, body) if self.line_fault else None
            self.lines.append((custom_id, body))
            if fault == "server_error":
                error = {
                    "message": "The server had an error processing your request.",
                    "type": "server_error",
                }
                response = {"status_code": 500, "request_id": f"req_{n}", "body": {"error": error}}
                errors.append({**entry, "response": response, "error": None})
                continue
            if fault == "refused":
                error = {
                    "message": "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_prompt",
                }
                response = {"status_code": 400, "request_id": f"req_{n}", "body": {"error": error}}
            elif fault == "no_logprobs":
                response = {
                    "status_code": 200,
                    "request_id": f"req_{n}",
                    "body": self.fake._completion(body, "A", None, 10),
                }
            elif _is_classify(body):
                answer = self.fake.label_answer(body)
                response = {"status_code": 200, "request_id": f"req_{n}", "body": answer}
            else:
                text = self.fake.describe_text(body, 0)
                answer = self.fake._completion(body, text, None, 10)
                response = {"status_code": 200, "request_id": f"req_{n}", "body": answer}
            output.append({**entry, "response": response, "error": None})
        random.Random(self.seed + job["_number"]).shuffle(output)  # any order: the client joins on custom_id
        random.Random(self.seed - job["_number"]).shuffle(errors)
        ok = sum(1 for line in output if line["response"]["status_code"] == 200)
        job["request_counts"] = {"total": len(lines), "completed": ok, "failed": len(lines) - ok}
        if output:
            job["output_file_id"] = self._file(_jsonl(output), "batch_output", "output.jsonl")["id"]
        if errors:
            job["error_file_id"] = self._file(_jsonl(errors), "batch_output", "errors.jsonl")["id"]
        job["status"] = status


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")


def _is_classify(body: dict) -> bool:
    from tests.fake_openai import is_classify

    return is_classify(body)


def run_batch_file(fake: FakeOpenAI, requests: str, output: str) -> None:
    """What ``vllm run-batch -i requests -o output`` writes, answered as the fake server would: one result
    line per request line (in reverse order: readers must join on custom_id)."""
    lines = []
    with open(requests, encoding="utf-8") as handle:
        for n, text in enumerate(handle):
            request = json.loads(text)
            body = request["body"]
            answer = fake.label_answer(body)
            response = {"status_code": 200, "request_id": f"vllm-batch-{n}", "body": answer}
            lines.append(
                {"id": f"vllm-{n}", "custom_id": request["custom_id"], "response": response, "error": None}
            )
    with open(output, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in reversed(lines))
