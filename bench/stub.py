"""A minimal, fast OpenAI-compatible stub for the engine benchmark, meant to run in its own process.

The test fake (:mod:`tests.fake_openai`) parses every body and records it; that costs more server CPU
per request than the clients being measured, so a benchmark against it would measure the server. This
stub speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` bodies) over a bare asyncio protocol
and answers every ``POST /v1/chat/completions`` with one precomputed chat.completion carrying
``choices[0].logprobs.content[0].top_logprobs`` in the real wire format, plus the rate-limit headers
OpenAI sends (``x-ratelimit-limit-requests`` …). It never parses the request body.

Options: ``--latency-min/--latency-max`` (uniform latency per request, seconds), ``--serial`` (a
queueing server, as llama.cpp's: chat requests are served one at a time in arrival order, each taking
that many seconds; a request whose client gave up is still served in its turn) and ``--rpm`` (a cap
enforced in fixed one-second windows of ``rpm/60`` requests, answered with 429 ``rate_limit_exceeded``
and ``retry-after`` / ``retry-after-ms`` until the next window; ``--no-limit-header`` enforces it without
announcing it in ``x-ratelimit-limit-requests``). ``GET /stats`` returns the counters as
JSON; ``POST /reset`` zeroes them. The port it listens on is printed as ``PORT <n>`` on stdout.

Run it by hand: ``python -m bench.stub --port 8901 --rpm 60000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import time

_CLASSIFY = {
    "id": "chatcmpl-stub",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "stub-model",
    "system_fingerprint": "fp_stub",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "A", "refusal": None},
            "logprobs": {
                "content": [
                    {
                        "token": "A",
                        "logprob": -0.4,
                        "bytes": [65],
                        "top_logprobs": [
                            {"token": t, "logprob": lp, "bytes": list(t.encode())}
                            for t, lp in (
                                ("A", -0.4),
                                ("B", -1.2),
                                (" A", -3.0),
                                (" B", -4.1),
                                ("Sure", -6.0),
                            )
                        ],
                    }
                ],
                "refusal": None,
            },
            "finish_reason": "length",
        }
    ],
    "usage": {
        "prompt_tokens": 310,
        "completion_tokens": 1,
        "total_tokens": 311,
        "prompt_tokens_details": {"cached_tokens": 256},
    },
}


def _response(status: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: keep-alive\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class Stub:
    def __init__(
        self, latency: tuple[float, float], rpm: float | None, announce: bool = True, serial: float = 0.0
    ) -> None:
        self.latency = latency
        self.serial = serial
        self.busy_until = 0.0  # serial: when the request last queued will have been served
        self.rpm = rpm
        self.per_window = int(rpm / 60.0) if rpm else 0
        limit_headers = f"x-ratelimit-limit-requests: {int(rpm)}\r\n" if rpm and announce else ""
        self.limit_headers = limit_headers
        self.ok = _response("200 OK", json.dumps(_CLASSIFY).encode(), limit_headers)
        self.models = _response("200 OK", b'{"object":"list","data":[{"id":"stub-model","object":"model"}]}')
        self.requests = 0
        self.answered_429 = 0
        self.window = (0, 0)

    def answer(self) -> bytes:
        """The reply to one chat request, counting it against the rpm window."""
        self.requests += 1
        if not self.rpm:
            return self.ok
        now = time.monotonic()
        second = int(now)
        start, used = self.window
        if second != start:
            start, used = second, 0
        if used >= self.per_window:
            self.answered_429 += 1
            wait = start + 1 - now
            body = json.dumps(
                {
                    "error": {
                        "message": f"Rate limit reached for requests. Please try again in {wait:.3f}s.",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                }
            ).encode()
            headers = (
                f"retry-after: {math.ceil(wait)}\r\nretry-after-ms: {int(wait * 1000) + 1}\r\n"
                f"x-ratelimit-remaining-requests: 0\r\n{self.limit_headers}"
            )
            self.window = (start, used)
            return _response("429 Too Many Requests", body, headers)
        self.window = (start, used + 1)
        return self.ok

    def stats(self) -> bytes:
        body = json.dumps({"requests": self.requests, "answered_429": self.answered_429}).encode()
        return _response("200 OK", body)


class _Connection(asyncio.Protocol):
    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 17)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.dispatch(head[: head.find(b" http/")])

    def dispatch(self, line: bytes) -> None:
        stub = self.stub
        if line == b"post /v1/chat/completions":
            reply = stub.answer()
            low, high = stub.latency
            if stub.serial > 0:
                now = self.loop.time()
                stub.busy_until = max(now, stub.busy_until) + stub.serial
                self.loop.call_at(stub.busy_until, self.send, reply)
                return
            if high > 0:
                self.loop.call_later(random.uniform(low, high), self.send, reply)
                return
        elif line == b"get /stats":
            reply = stub.stats()
        elif line == b"post /reset":
            stub.requests = stub.answered_429 = 0
            reply = stub.stats()
        elif line == b"get /v1/models":
            reply = stub.models
        else:
            reply = _response(
                "404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}'
            )
        self.send(reply)

    def send(self, reply: bytes) -> None:
        if self.transport is not None:
            self.transport.write(reply)


async def serve(
    port: int, latency: tuple[float, float], rpm: float | None, announce: bool = True, serial: float = 0.0
) -> None:
    stub = Stub(latency, rpm, announce, serial)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(stub), "127.0.0.1", port, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-min", type=float, default=0.0)
    parser.add_argument("--latency-max", type=float, default=0.0)
    parser.add_argument("--rpm", type=float, default=None)
    parser.add_argument("--no-limit-header", action="store_true", help="enforce --rpm without announcing it")
    parser.add_argument("--serial", type=float, default=0.0, help="serve one request at a time, SECONDS each")
    args = parser.parse_args()
    latency = (args.latency_min, max(args.latency_min, args.latency_max))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, latency, args.rpm, not args.no_limit_header, args.serial))


if __name__ == "__main__":
    main()
