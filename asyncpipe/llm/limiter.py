"""An adaptive concurrency limit that follows rate limits and latency, with a shared pause and optional
request/token budgets.

The algorithm, in the way TCP and Netflix's concurrency-limits do it:

- **Slow start.** The limit starts modest and grows by one for every success *while the limit was
  actually used* (every slot taken, or callers waiting): it doubles about once per round trip, as a
  TCP window does, and an idle limit does not grow.
- **Additive increase, multiplicative decrease.** After the first congestion signal (a 429, a request
  abandoned at the timeout, or a queue seen in the latency) the limit halves, and from then on grows
  by one per window of successes (``1/limit`` per success). Several signals from one burst halve it
  only once: a decrease is ignored if another happened within the last ``cooldown`` seconds.
- **Latency: is the limit buying answers or only queueing?** A self-hosted server (llama.cpp, one
  vLLM replica) answers a fixed number of requests at a time and queues the rest without a 429: past
  that point more concurrency raises the latency while the answer rate stays flat, until requests
  time out. Each success reports its latency, and every *round* (``limit`` successes, about one round
  trip) is judged as TCP Vegas judges one: the round's *lowest* latency against the lowest latency
  seen recently (the *base*, the server's no-queue latency). Comparing minimum with minimum, as Vegas
  does, ignores the spread of latencies (an API answering in 0.1-0.3 s shows no queue), where
  comparing a mean with a minimum would see one. The excess is queueing: by Little's law the requests
  waiting are ``answer rate × (round minimum − base)``. Over ``QUEUE_BETA`` of them the limit comes
  down, in one step, to what the answer rate needs (``answer rate × base``) plus ``QUEUE_ALPHA``, but
  to no less than half the requests then in flight (Netflix's Gradient2 also never more than halves
  per update, so that one odd round cannot collapse the limit). Between the two it holds; under
  ``QUEUE_ALPHA`` it grows as above. A queue that adds under ``DELAY_FLOOR`` seconds (or under the
  base itself) is ignored: a busy client's own event loop makes that much, and it costs nothing.
  A parallel server shows the other picture: the answer rate rises with the limit and the round
  minimum stays at the base. In slow start, a success slower than twice the base does not grow the
  limit, so a queue building up inside the first round is not doubled into.
- **The timeout bounds the queue.** With a ``timeout``, the latency is kept under
  ``TIMEOUT_SHARE`` of it: a success slower than that does not grow the limit, a round whose mean is
  slower scales the limit down in proportion, and a success slower than twice that halves the
  requests in flight at once (at most once per ``cooldown`` or per that latency, whichever is
  longer). A timeout itself is a congestion signal like a 429, and the halving starts from the
  requests in flight (TCP's flight size), so the abandoned request is sent again only once the limit
  is below what was in flight when it was abandoned. Nothing is known of the server before its first
  answer, so until then only ``FIRST_WINDOW`` requests go; the initial limit follows at once if that
  many requests, each as slow as the first answer, would still wait under the share.
- **The base is measured again.** It is the lowest latency seen; a success within 5 % of it renews
  it. Against a queue that the limit keeps short, no success comes that fast any more, so after
  ``BASE_TTL`` seconds without one the limiter probes, as BBR's ProbeRTT does: for one round only
  what the answer rate needs at the old base is let in flight (``answer rate × base``, one request
  for a serial server), and that round's lowest latency becomes the base. Then the limit returns to
  where it was, unless a congestion signal came meanwhile. A server that became slower for everyone
  (longer prompts, a busier API) so gets a new base instead of being read as our own queue for good.
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
(a free slot, nobody waiting, no budget, no pause) takes no lock and creates no event; the caller
reads the clock twice to time the request.

Edge cases: the limit never falls below ``minimum`` nor rises above ``maximum``; a waiter cancelled
before its turn leaves the queue; one cancelled after it was handed a slot passes the slot on, so a
cancellation never leaks a slot. Successes reported without a latency (long generations, tests) take
no part in the latency rules. The clock and the sleep are parameters, for tests on virtual time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import anyio

from asyncpipe.llm.pacing import LatencyRound, Pacer, RecentSuccesses

#: seconds without a 429 after which an inferred pace is dropped
INFERRED_TTL = 60.0
#: fewer successes than this in the second before a burst of 429s: no pace is inferred from it
INFER_MIN_PER_SECOND = 50
#: requests queued at the server (answer rate × queueing delay) under which the limit may grow ...
QUEUE_ALPHA = 3.0
#: ... and over which it comes down
QUEUE_BETA = 6.0
#: queueing delay (seconds) too small to act on, whatever the count
DELAY_FLOOR = 0.1
#: the share of the timeout the latency is kept under
TIMEOUT_SHARE = 0.25
#: seconds after which an unrenewed base latency is measured again
BASE_TTL = 30.0
#: requests in flight, with a timeout, until the first answer shows the full initial limit is safe
FIRST_WINDOW = 4.0
#: fewest successes in a round (a round is otherwise ``limit`` successes)
MIN_ROUND = 8


@dataclass(frozen=True)
class LimiterState:
    """What the limiter has learnt, for the progress display and ``run.json``."""

    limit: int
    peak_limit: int
    maximum: int
    latency_s: float | None  # mean latency of the last round of successes
    base_latency_s: float | None  # the no-queue latency it compares against
    answer_rate_per_s: float | None  # answers per second in the last round
    queued: float | None  # requests estimated waiting at the server in the last round
    decreases: int  # times the limit came down, for any reason
    latency_decreases: int  # ... of them for latency (a queue, or latency near the timeout)
    timeouts: int  # requests abandoned at the timeout

    def to_dict(self) -> dict:
        return asdict(self)


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
        timeout: float | None = None,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.maximum = max(1, maximum)
        self.minimum = max(1, min(minimum, self.maximum))
        self.limit = float(min(self.maximum, max(self.minimum, initial if initial is not None else 16)))
        self._initial = self.limit if timeout else None  # with a timeout, first FIRST_WINDOW, then this
        if timeout:
            self.limit = min(self.limit, max(float(self.minimum), FIRST_WINDOW))
        self.in_flight = 0
        self.slow_start = True
        self.cooldown = cooldown
        self.peak_limit = int(self.limit)
        self.decreases = 0
        self.clock = clock  # public: callers time their requests with it
        self._sleep = sleep
        self._last_decrease = -1e18
        self._resume_at = 0.0
        self._waiters: deque[anyio.Event] = deque()
        self._rpm = Pacer(rpm) if rpm else None
        self._rpm_given = bool(rpm)
        self._tpm = Pacer(tpm) if tpm else None
        #: "given", "server" (announced), "inferred" (from 429 bursts) or None
        self.rpm_source: str | None = "given" if rpm else None
        self._recent = RecentSuccesses()
        self.timeout = timeout
        #: the lowest latency seen lately (seconds): the server's no-queue latency
        self.base_latency: float | None = None
        self._base_renewed = 0.0
        #: the last finished round's mean latency and answer rate (answers per second)
        self.latency: float | None = None
        self.answer_rate: float | None = None
        #: requests waiting at the server in the last round, as estimated (answer rate × queueing delay)
        self.queued: float | None = None
        self.latency_decreases = 0
        self.timeouts = 0
        self._round = LatencyRound(None)
        self._grow = True  # the last round's verdict: False while a queue holds the limit
        self._probe_from: tuple[float, float] | None = None  # (limit to restore, since) in a probe

    @property
    def rpm(self) -> float | None:
        """The requests-per-minute pace in force: given, announced by the server, or inferred from 429s
        (``rpm_source`` says which); ``None`` when requests are not paced."""
        return self._rpm.per_minute if self._rpm is not None else None

    def state(self) -> LimiterState:
        def rounded(value: float | None, digits: int = 3) -> float | None:
            return None if value is None else round(value, digits)

        latencies = (rounded(self.latency), rounded(self.base_latency))
        rate, queued = rounded(self.answer_rate, 1), rounded(self.queued, 1)
        counts = (self.decreases, self.latency_decreases, self.timeouts)
        return LimiterState(int(self.limit), self.peak_limit, self.maximum, *latencies, rate, queued, *counts)

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
        now = self.clock()
        delay = max(0.0, self._resume_at - now)
        if self._rpm is not None:
            delay = max(delay, self._rpm.reserve(now))
        if self._tpm is not None and tokens:
            delay = max(delay, self._tpm.reserve(now, tokens))
        if delay > 0:
            await self._sleep(delay)
        # a pause may have been called while we slept
        while (remaining := self._resume_at - self.clock()) > 0:
            await self._sleep(remaining)
        self._resume_at = 0.0  # the pause is over: back to the fast path

    def release(
        self,
        *,
        ok: bool = True,
        rate_limited: bool = False,
        timed_out: bool = False,
        latency: float | None = None,
    ) -> None:
        """Give the slot back. ``latency`` (seconds, successes only) feeds the latency rules;
        ``timed_out`` says the request was abandoned at the timeout."""
        flight = self.in_flight
        used = flight >= int(self.limit) or bool(self._waiters)
        self.in_flight -= 1
        if rate_limited:
            self._decrease()
        elif timed_out:
            self.timeouts += 1
            self._decrease(flight)
        elif ok:
            if self.rpm_source is None or self.rpm_source == "inferred":
                self._note_success()
            grow = True
            if latency is not None:
                grow = self._observe(latency, flight)
            if used and grow:
                self._increase()
        if self._waiters:
            self._hand_over()

    def _note_success(self) -> None:
        now = self.clock()
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

    def _decrease(self, flight: int | None = None, *, cooldown: float | None = None) -> bool:
        """Halve the limit (or the requests in flight, ``flight``, when fewer); False in a cooldown."""
        now = self.clock()
        self.slow_start = False
        if now - self._last_decrease < (self.cooldown if cooldown is None else cooldown):
            return False
        self._last_decrease = now
        self.decreases += 1
        basis = self.limit if flight is None else min(self.limit, float(flight))
        self.limit = max(float(self.minimum), basis / 2)
        if flight is None and (self.rpm_source is None or self.rpm_source == "inferred"):
            self._infer_rpm(now)
        return True

    # -- latency ----------------------------------------------------------------------------------
    def _observe(self, latency: float, flight: int) -> bool:
        """Note one success's latency; whether it may grow the limit (see the module docstring)."""
        now = self.clock()
        base = self.base_latency
        if self._initial is not None:  # the first answer: would the initial limit queue too long?
            if latency * self._initial <= self.timeout * TIMEOUT_SHARE:
                self.limit = max(self.limit, self._initial)
            self._initial = None
        if base is None or latency <= base * 1.05:
            if base is None or latency < base:
                self.base_latency = base = latency
            self._base_renewed = now
        self._round.add(latency, now)
        grow = self._grow
        if self.slow_start and latency > 2 * base + DELAY_FLOOR / 2:
            grow = False  # a queue may be building inside this round: do not double into it
        if self.timeout and latency > self.timeout * TIMEOUT_SHARE:
            grow = False
            # twice that is an emergency: do not wait for the round to end
            if latency > 2 * self.timeout * TIMEOUT_SHARE and self._decrease(
                flight, cooldown=max(self.cooldown, latency)
            ):
                self.latency_decreases += 1
        if self._round.count >= max(MIN_ROUND, int(self.limit)):
            self._end_round(now, flight)
            grow = grow and self._grow
        return grow

    def _end_round(self, now: float, flight: int) -> None:
        finished = self._round
        self._round = LatencyRound(now)
        began = finished.began if finished.began is not None else now
        rate = finished.count / max(now - began, 1e-9)
        mean = finished.total / finished.count
        self.latency, self.answer_rate = mean, rate
        if self._probe_from is not None:  # the probe round: its lowest is the no-queue latency now
            restore, started = self._probe_from
            self.base_latency, self._base_renewed, self._probe_from = finished.lowest, now, None
            if self._last_decrease < started:  # nothing said to slow down meanwhile: back where it was
                self.limit = max(self.limit, restore)
        base = self.base_latency if self.base_latency is not None else finished.lowest
        if now - self._base_renewed > BASE_TTL:
            # not renewed for long: measure it again with only what the answer rate needs in flight
            self._probe_from, self._grow = (self.limit, now), False
            self.limit = max(float(self.minimum), min(self.limit, rate * base))
            return
        delay = finished.lowest - base
        self.queued = queued = rate * max(0.0, delay)
        self._grow = True
        if delay > max(DELAY_FLOOR, base):
            if queued > QUEUE_BETA:
                target = max(rate * base + QUEUE_ALPHA, min(self.limit, float(flight)) / 2)
                if target < self.limit:
                    self._lower_to(target, now)
                self._grow = False
            elif queued > QUEUE_ALPHA:
                self._grow = False
        if self.timeout and mean > self.timeout * TIMEOUT_SHARE:
            self._grow = False
            self._lower_to(self.limit * self.timeout * TIMEOUT_SHARE / mean, now)

    def _lower_to(self, target: float, now: float) -> None:
        target = max(float(self.minimum), target)
        if target < self.limit:
            self.limit = target
            self.slow_start = False
            self.decreases += 1
            self.latency_decreases += 1
            self._last_decrease = now

    def _infer_rpm(self, now: float) -> None:
        """Pace at what the server let through in the last second (see the module docstring)."""
        per_second = self._recent.per_second(now)
        if per_second < INFER_MIN_PER_SECOND:
            return
        if self._rpm is None:
            self._rpm = Pacer(per_second * 60.0)
        else:
            self._rpm.set_rate(per_second * 60.0)
        self.rpm_source = "inferred"

    def pause(self, seconds: float) -> None:
        """Hold every caller until ``seconds`` from now (the server's retry hint)."""
        if seconds > 0:
            self._resume_at = max(self._resume_at, self.clock() + seconds)

    def learn_rpm(self, rpm: float | None) -> None:
        """Pace at the server's announced requests-per-minute limit, unless ``rpm`` was given."""
        if self._rpm_given or not rpm:
            return
        if self._rpm is None:
            self._rpm = Pacer(rpm)
        elif self._rpm.per_minute != rpm:
            self._rpm.set_rate(rpm)
        self.rpm_source = "server"
