"""An adaptive concurrency limit with a shared pause and optional request/token budgets.

The algorithm, in the way TCP and inspect_ai do it:

- **Slow start.** The limit starts modest and grows by one for every success *while the limit was
  actually used* (every slot taken, or callers waiting): it doubles about once per round trip, as a
  TCP window does, and an idle limit does not grow.
- **Additive increase, multiplicative decrease.** After the first rate-limit answer (429) the limit
  halves, and from then on grows by one per window of successes (``1/limit`` per success). Several
  429s from one burst halve it only once: a decrease is ignored if another happened within the last
  ``cooldown`` seconds.
- **One shared pause.** A 429 carries a hint (``retry-after-ms``, ``retry-after``, ``x-ratelimit-reset-*``).
  :meth:`pause` makes *every* caller wait until that moment, so hundreds of workers do not retry in
  lock-step against a server that just asked for quiet.
- **Budgets.** ``rpm`` and ``tpm`` pace requests and (estimated) tokens per minute with a virtual
  clock (GCRA): each request takes the next free slot, with a burst of a tenth of a second's worth,
  small enough that a server counting in fixed one-second windows is not overrun after a quiet spell.
  Without an ``rpm``, :meth:`learn_rpm` adopts the limit the server announces
  (``x-ratelimit-limit-requests``); concurrency alone cannot bound a rate when answers are fast.
- **A rate inferred from 429s.** When no ``rpm`` is known (none given, none announced), the limiter
  counts successes over the last second; at each burst of 429s that count is the rate the server has
  just let through, and requests are paced at it from then on. Without this, fast answers exhaust a
  per-window budget early in every window and the requests then in flight all come back 429. The
  inferred pace is re-measured at every burst and dropped after ``INFERRED_TTL`` seconds without
  one, so a limit that was raised is found again. It is inferred only from at least
  ``INFER_MIN_PER_SECOND`` successes in that second: below that the count says more about how much
  work there was (a small step, a stray 429) than about the server, and the pause and the halving
  keep 429s rare at such rates anyway.

Slots are handed over, not raced for: :meth:`release` gives a freed slot straight to the longest
waiter, so callers are served in arrival order and a newcomer cannot overtake the queue. The fast path
(a free slot, nobody waiting, no budget, no pause) takes no lock, creates no event and reads no clock.

Edge cases: the limit never falls below ``minimum`` nor rises above ``maximum``; a waiter cancelled
before its turn leaves the queue; one cancelled after it was handed a slot passes the slot on, so a
cancellation never leaks a slot. The clock and the sleep are parameters, for tests on virtual time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import anyio

BURST_SECONDS = 0.1
#: seconds without a 429 after which an inferred pace is dropped
INFERRED_TTL = 60.0
#: fewer successes than this in the second before a burst of 429s: no pace is inferred from it
INFER_MIN_PER_SECOND = 50
_SLOTS = 10  # the last second of successes, in tenths


class _RecentSuccesses:
    """Successes within the last second, counted in ten buckets of a tenth of a second."""

    def __init__(self) -> None:
        self.buckets = [0] * _SLOTS
        self.slot = 0

    def _advance(self, now: float) -> int:
        slot = int(now * _SLOTS)
        gap = slot - self.slot
        if gap > 0:
            for k in range(1, min(gap, _SLOTS) + 1):
                self.buckets[(self.slot + k) % _SLOTS] = 0
            self.slot = slot
        return slot

    def add(self, now: float) -> None:
        self.buckets[self._advance(now) % _SLOTS] += 1

    def per_second(self, now: float) -> int:
        self._advance(now)
        return sum(self.buckets)


class _Pacer:
    """Spend ``amount`` of a per-minute budget: returns how long to wait before going."""

    def __init__(self, per_minute: float, burst_seconds: float = BURST_SECONDS) -> None:
        self.burst_seconds = burst_seconds
        self.next_free = 0.0
        self.set_rate(per_minute)

    def set_rate(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.interval = 60.0 / per_minute  # seconds per unit
        self.burst = per_minute / 60.0 * self.burst_seconds  # units that may go at once after a quiet spell

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
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.maximum = max(1, maximum)
        self.minimum = max(1, min(minimum, self.maximum))
        self.limit = float(min(self.maximum, max(self.minimum, initial if initial is not None else 16)))
        self.in_flight = 0
        self.slow_start = True
        self.cooldown = cooldown
        self.peak_limit = int(self.limit)
        self.decreases = 0
        self._clock = clock
        self._sleep = sleep
        self._last_decrease = -1e18
        self._resume_at = 0.0
        self._waiters: deque[anyio.Event] = deque()
        self._rpm = _Pacer(rpm) if rpm else None
        self._rpm_given = bool(rpm)
        self._tpm = _Pacer(tpm) if tpm else None
        #: "given", "server" (announced), "inferred" (from 429 bursts) or None
        self.rpm_source: str | None = "given" if rpm else None
        self._recent = _RecentSuccesses()

    @property
    def rpm(self) -> float | None:
        """The requests-per-minute pace in force: given, announced by the server, or inferred from 429s
        (``rpm_source`` says which); ``None`` when requests are not paced."""
        return self._rpm.per_minute if self._rpm is not None else None

    # -- slots ------------------------------------------------------------------------------------
    async def acquire(self, tokens: int = 0) -> None:
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
        else:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                if event.is_set():  # a slot was handed over just as we were cancelled: pass it on
                    self.in_flight -= 1
                    self._hand_over()
                else:
                    self._waiters.remove(event)
                raise
        if self._rpm is None and self._tpm is None and not self._resume_at:
            return
        try:
            await self._wait_for_turn(tokens)
        except BaseException:
            self.in_flight -= 1
            self._hand_over()
            raise

    async def _wait_for_turn(self, tokens: int) -> None:
        now = self._clock()
        delay = max(0.0, self._resume_at - now)
        if self._rpm is not None:
            delay = max(delay, self._rpm.reserve(now))
        if self._tpm is not None and tokens:
            delay = max(delay, self._tpm.reserve(now, tokens))
        if delay > 0:
            await self._sleep(delay)
        # a pause may have been called while we slept
        while (remaining := self._resume_at - self._clock()) > 0:
            await self._sleep(remaining)
        self._resume_at = 0.0  # the pause is over: back to the fast path

    def release(self, *, ok: bool = True, rate_limited: bool = False) -> None:
        used = self.in_flight >= int(self.limit) or bool(self._waiters)
        self.in_flight -= 1
        if rate_limited:
            self._decrease()
        elif ok:
            if self.rpm_source is None or self.rpm_source == "inferred":
                self._note_success()
            if used:
                self._increase()
        if self._waiters:
            self._hand_over()

    def _note_success(self) -> None:
        now = self._clock()
        self._recent.add(now)
        if self.rpm_source == "inferred" and now - self._last_decrease > INFERRED_TTL:
            self._rpm, self.rpm_source = None, None  # quiet for a long while: probe for more again

    def _hand_over(self) -> None:
        """Give free slots to the longest waiters (the slot is counted for them before they wake)."""
        while self._waiters and self.in_flight < int(self.limit):
            self.in_flight += 1
            self._waiters.popleft().set()

    # -- adaptation -------------------------------------------------------------------------------
    def _increase(self) -> None:
        if self.limit >= self.maximum:
            return
        self.limit = min(float(self.maximum), self.limit + (1.0 if self.slow_start else 1.0 / self.limit))
        if int(self.limit) > self.peak_limit:
            self.peak_limit = int(self.limit)

    def _decrease(self) -> None:
        now = self._clock()
        self.slow_start = False
        if now - self._last_decrease < self.cooldown:
            return
        self._last_decrease = now
        self.decreases += 1
        self.limit = max(float(self.minimum), self.limit / 2)
        if self.rpm_source is None or self.rpm_source == "inferred":
            self._infer_rpm(now)

    def _infer_rpm(self, now: float) -> None:
        """Pace at what the server let through in the last second (see the module docstring)."""
        per_second = self._recent.per_second(now)
        if per_second < INFER_MIN_PER_SECOND:
            return
        if self._rpm is None:
            self._rpm = _Pacer(per_second * 60.0)
        else:
            self._rpm.set_rate(per_second * 60.0)
        self.rpm_source = "inferred"

    def pause(self, seconds: float) -> None:
        """Hold every caller until ``seconds`` from now (the server's retry hint)."""
        if seconds > 0:
            self._resume_at = max(self._resume_at, self._clock() + seconds)

    def learn_rpm(self, rpm: float | None) -> None:
        """Pace at the server's announced requests-per-minute limit, unless ``rpm`` was given."""
        if self._rpm_given or not rpm:
            return
        if self._rpm is None:
            self._rpm = _Pacer(rpm)
        elif self._rpm.per_minute != rpm:
            self._rpm.set_rate(rpm)
        self.rpm_source = "server"
