"""The retry policy: one owner for retrying, built on tenacity.

What is retried is decided by the error type (:class:`~asyncpipe.errors.RetryableAPIError`); fatal
errors propagate at once. The wait honours the server's hint when it gave one (``retry-after``), else
exponential backoff with full jitter, capped. Attempts are bounded. Nothing below this layer retries:
any SDK used elsewhere runs with ``max_retries=0``, since stacked retries multiply waits.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from asyncpipe.errors import RetryableAPIError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: how to wait between attempts (tests pass a recorder instead of sleeping)
    sleep: Callable[[float], Awaitable[None]] | None = field(default=None, compare=False)

    def wait_seconds(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = exc.retry_after if isinstance(exc, RetryableAPIError) else None
        if hint is not None:
            # the server knows best; a little jitter so that waiters do not return together
            return min(self.max_delay, hint + random.uniform(0, 0.1 * hint + 0.01))
        ceiling = min(self.max_delay, self.base_delay * 2 ** (state.attempt_number - 1))
        return random.uniform(0.5 * ceiling, ceiling)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[RetryableAPIError], None] | None = None,
    ) -> T:
        """Run ``call`` until it succeeds, raises a non-retryable error, or the attempts run out (the
        last RetryableAPIError is re-raised).

        The first attempt runs outside tenacity: nearly every call succeeds at once, and setting up
        tenacity costs tens of microseconds, a tenth of a whole request on the hot path. After a retryable failure tenacity takes over with
        that failure as its attempt 1, so waits, hints and the attempt bound are exactly its own.
        """
        try:
            return await call()
        except RetryableAPIError as exc:
            first: RetryableAPIError = exc
        if self.max_attempts <= 1:
            raise first
        replayed = False

        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None and state.outcome is not None:
                exc = state.outcome.exception()
                if isinstance(exc, RetryableAPIError):
                    on_retry(exc)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableAPIError),
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait_seconds,
            before_sleep=before_sleep,
            reraise=True,
            **({"sleep": self.sleep} if self.sleep is not None else {}),
        )

        async def once() -> T:  # tenacity awaits only what is itself a coroutine function
            nonlocal replayed
            if not replayed:  # attempt 1 is the failure that already happened
                replayed = True
                raise first
            return await call()

        return await retrying(once)
