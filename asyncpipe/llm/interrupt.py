"""Ctrl-C in two steps: keep the answers already paid for, then stop.

Answers to requests in flight are paid for whether or not anyone waits for them, and a run cancelled
at once loses them (up to the concurrency ceiling), so the next run buys them again. On the first
Ctrl-C :func:`run_interruptible` sets :attr:`Stopper.stopping`: every client stops before sending a new
request (first tries and retries alike), while the requests already sent run to their end and their
answers go to the cache as usual. When none is left in flight, or after ``grace`` seconds (shown to the
user), the run is cancelled; a second Ctrl-C cancels it at once. Either way the command ends as an
interrupted run (exit 130) with its report kept.

Counting is exact without locks: one event loop, and a client stores an answer in the cache in the
same synchronous stretch in which its request stops counting as in flight (no await in between), so
the run is never cancelled between an answer's arrival and its storage.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

#: seconds the first Ctrl-C waits for answers in flight
DRAIN_SECONDS = 10.0


class Stopper:
    """Shared by every client of a run (through the model pool)."""

    def __init__(self) -> None:
        self.stopping = False
        self.in_flight = 0
        self._idle: anyio.Event | None = None

    async def hold(self) -> None:
        """Before a request is sent: once stopping, never send it (wait for the cancellation)."""
        if self.stopping:
            await anyio.sleep_forever()

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def drain(self, seconds: float) -> bool:
        """Stop sending and wait up to ``seconds`` for the requests in flight; True when all came back."""
        self.stopping = True
        with anyio.move_on_after(seconds):
            while self.in_flight > 0:
                self._idle = anyio.Event()
                await self._idle.wait()
        return self.in_flight == 0


class Interrupt(Exception):
    """Raised by :func:`run_interruptible` after Ctrl-C: the command was stopped before its end."""


async def run_interruptible(
    main: Callable[[], Awaitable[T]],
    stopper: Stopper,
    say: Callable[[str], None],
    grace: float = DRAIN_SECONDS,
) -> T:
    """Run ``main`` with Ctrl-C handled in two steps (see the module). Returns its result if it ends on its
    own (even after a Ctrl-C, when nothing was left to send); raises :class:`Interrupt` when it was
    cancelled."""
    finished = False
    result: T | None = None
    failure: BaseException | None = None

    async with anyio.create_task_group() as group:

        async def drain_then_cancel() -> None:
            kept = await stopper.drain(grace)
            if not kept:
                say(
                    f"stopping now: {stopper.in_flight} answer(s) still in flight after {grace:g} s are not kept"
                )
            group.cancel_scope.cancel()

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                presses = 0
                async for _ in signals:
                    presses += 1
                    if presses == 1:
                        say(
                            f"Ctrl-C: sending nothing more; waiting up to {grace:g} s for the "
                            f"{stopper.in_flight} answer(s) in flight, to keep them (Ctrl-C again stops at once)"
                        )
                        group.start_soon(drain_then_cancel)
                    else:
                        group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            result = await main()
            finished = True
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # raised as itself below, not inside the task group's exception group
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if not finished:
        raise Interrupt()
    return result  # type: ignore[return-value]
