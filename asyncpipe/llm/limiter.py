"""An adaptive concurrency limit with a shared pause and optional request/token budgets.

The algorithm, in the way TCP and inspect_ai do it:

- **Slow start.** The limit starts modest and doubles each time a full window of requests (as many as
  the limit) succeeds *while the limit was actually used*; an idle limit does not grow.
- **Additive increase, multiplicative decrease.** After the first rate-limit answer (429) the limit
  halves, and from then on grows by one per successful window. Several 429s from one burst halve it
  only once: a decrease is ignored if another happened within the last ``cooldown`` seconds.
- **One shared pause.** A 429 carries a hint (``retry-after-ms``, ``retry-after``, ``x-ratelimit-reset-*``).
  :meth:`pause` makes *every* caller wait until that moment, so hundreds of workers do not retry in
  lock-step against a server that just asked for quiet.
- **Budgets.** ``rpm`` and ``tpm`` pace requests and (estimated) tokens per minute with a virtual
  clock (GCRA): each request takes the next free slot, with a burst of one second's worth.

Edge cases: the limit never falls below ``minimum`` nor rises above ``maximum``; releasing wakes the
waiters in arrival order; a cancelled waiter leaves the queue without taking a slot.
"""

from __future__ import annotations

from collections import deque

import anyio


class _Pacer:
    """Spend ``amount`` of a per-minute budget: returns how long to wait before going."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute  # seconds per unit
        self.burst = per_minute / 60.0  # one second's worth
        self.next_free = 0.0

    def reserve(self, now: float, amount: float = 1.0) -> float:
        start = max(self.next_free, now - self.burst * self.interval)
        self.next_free = start + amount * self.interval
        return max(0.0, self.next_free - self.burst * self.interval - now)


class AdaptiveLimiter:
    def __init__(
        self,
        maximum: int,
        *,
        initial: int | None = None,
        minimum: int = 1,
        rpm: float | None = None,
        tpm: float | None = None,
        cooldown: float = 1.0,
    ) -> None:
        self.maximum = max(1, maximum)
        self.minimum = max(1, min(minimum, self.maximum))
        self.limit = float(min(self.maximum, initial if initial is not None else min(self.maximum, 16)))
        self.in_flight = 0
        self.slow_start = True
        self.cooldown = cooldown
        self._window_successes = 0
        self._window_peak = 0
        self._last_decrease = -1e9
        self._resume_at = 0.0
        self._waiters: deque[anyio.Event] = deque()
        self._rpm = _Pacer(rpm) if rpm else None
        self._tpm = _Pacer(tpm) if tpm else None
        self.peak_limit = int(self.limit)

    # -- slots ------------------------------------------------------------------------------------
    async def acquire(self, tokens: int = 0) -> None:
        while self.in_flight >= int(self.limit) or self._waiters:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                # cancelled: leave the queue, and pass on a wake-up this waiter may have received
                if event in self._waiters:
                    self._waiters.remove(event)
                self._wake()
                raise
            if event in self._waiters:
                self._waiters.remove(event)
            if self.in_flight < int(self.limit):
                break
        self.in_flight += 1
        self._window_peak = max(self._window_peak, self.in_flight)
        try:
            await self._wait_for_turn(tokens)
        except BaseException:
            self.in_flight -= 1
            self._wake()
            raise

    async def _wait_for_turn(self, tokens: int) -> None:
        now = anyio.current_time()
        delay = max(0.0, self._resume_at - now)
        if self._rpm is not None:
            delay = max(delay, self._rpm.reserve(now))
        if self._tpm is not None and tokens:
            delay = max(delay, self._tpm.reserve(now, tokens))
        if delay > 0:
            await anyio.sleep(delay)
        # a pause may have been called while we slept
        while (remaining := self._resume_at - anyio.current_time()) > 0:
            await anyio.sleep(remaining)

    def release(self, *, ok: bool = True, rate_limited: bool = False) -> None:
        self.in_flight -= 1
        if rate_limited:
            self._decrease()
        elif ok:
            self._increase()
        self._wake()

    def _wake(self) -> None:
        free = int(self.limit) - self.in_flight
        for event in list(self._waiters)[: max(0, free)]:
            event.set()

    # -- adaptation -------------------------------------------------------------------------------
    def _increase(self) -> None:
        self._window_successes += 1
        if self._window_successes < int(self.limit):
            return
        used = self._window_peak >= int(self.limit) * 0.8
        self._window_successes = 0
        self._window_peak = self.in_flight
        if not used:
            return
        self.limit = min(self.maximum, self.limit * 2 if self.slow_start else self.limit + 1)
        self.peak_limit = max(self.peak_limit, int(self.limit))

    def _decrease(self) -> None:
        now = anyio.current_time()
        self.slow_start = False
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        self.limit = max(self.minimum, self.limit / 2)
        self._window_successes = 0

    def pause(self, seconds: float) -> None:
        """Hold every caller until ``seconds`` from now (the server's retry hint)."""
        if seconds > 0:
            self._resume_at = max(self._resume_at, anyio.current_time() + seconds)
