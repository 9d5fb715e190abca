"""What the limiter counts and paces with: a per-minute pace (GCRA), the last second's successes, and
the latencies of one round. See :mod:`asyncpipe.llm.limiter` for how they are used."""

from __future__ import annotations

BURST_SECONDS = 0.1
_SLOTS = 10  # the last second of successes, in tenths


class RecentSuccesses:
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


class Pacer:
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


class LatencyRound:
    """Latencies of the successes of one round: count, lowest, sum, and when the round began."""

    __slots__ = ("began", "count", "lowest", "total")

    def __init__(self, began: float | None) -> None:
        self.began = began
        self.count = 0
        self.lowest = float("inf")
        self.total = 0.0

    def add(self, latency: float, now: float) -> None:
        if not self.count:  # after an idle spell the round begins when its first request was sent
            self.began = now - latency if self.began is None else max(self.began, now - latency)
        self.count += 1
        self.total += latency
        if latency < self.lowest:
            self.lowest = latency
