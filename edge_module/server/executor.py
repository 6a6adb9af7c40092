"""Where scoring calls run: on dedicated threads with a timeout, or inline on the loop with a watchdog.

:class:`ScoringLane` owns a few threads per worker process that take calls from a queue. The event
loop submits a call with a callback; the thread runs it and hands the result back in one wake-up
for however many calls finished meanwhile (``call_soon_threadsafe`` is the expensive part of a
thread hop, so it is batched). Every call has a deadline; a sweep on the loop answers overdue calls
with :class:`~edge_module.runtime.ScoringTimeout` (504) and, when the call is still running, gives
up on its thread and starts a fresh one so the server keeps serving while the stuck call finishes (or
never does). A call submitted with its scorer's ``cancel`` is cancelled then, when it is the only
call in progress (``cancel()`` stops every call of its scorer).

Inline execution (``run_inline``) calls straight on the loop thread: no hop at all, for scorers
that declare themselves fast and bounded (``inline_safe = True``, e.g. the built-in ONNX scorer).
A watchdog thread notices a call that overruns the timeout and, when the scorer supports
``cancel()`` (:attr:`~edge_module.runtime.ModelRuntime.supports_cancel`; onnxruntime's
``RunOptions.terminate``), cancels it so the call raises and the request is answered 504.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from edge_module.runtime import ScoringTimeout

log = logging.getLogger("edgepack.server")

Callback = Callable[[Any, BaseException | None], None]


class _Job:
    __slots__ = (
        "answered",
        "args",
        "callback",
        "cancel",
        "deadline",
        "detached",
        "error",
        "finished",
        "fn",
        "result",
        "thread",
        "waiter",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple,
        callback: Callback,
        deadline: float,
        cancel: Callable[[], None] | None = None,
    ):
        self.fn = fn
        self.args = args
        self.callback = callback
        self.deadline = deadline
        self.cancel = cancel
        self.answered = False  # touched on the loop thread only
        self.thread: _Worker | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.waiter: threading.Lock | None = None  # held while the loop waits for the result in place
        self.detached = False  # the loop stopped waiting: hand the result back through the queue
        self.finished = False


class _Worker:
    __slots__ = ("abandoned", "thread")

    def __init__(self) -> None:
        self.abandoned = False
        self.thread: threading.Thread | None = None


class ScoringLane:
    """Runs blocking scoring calls off the event loop with a per-call timeout."""

    MAX_ABANDONED = 16

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threads: int = 1,
        timeout: float = 60.0,
        name: str = "scoring",
        on_timeout: Callable[[], None] | None = None,
    ):
        self.loop = loop
        self.timeout = timeout
        self.name = name
        self.on_timeout = on_timeout
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: collections.deque[_Job] = collections.deque()
        self._handoff = threading.Lock()
        self._wake_pending = False
        self._inflight: collections.deque[_Job] = collections.deque()
        self._workers: list[_Worker] = []
        self._abandoned = 0
        self._closed = False
        self._sweep_interval = min(1.0, max(0.005, timeout / 10))
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._count = 0
        for _ in range(threads):
            self._spawn()
        # inline calls
        self._inline_started = 0.0
        self._inline_cancel: Callable[[], None] | None = None
        self._inline_cancelled = False
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()

    # -- threads ------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        worker = _Worker()
        self._count += 1
        worker.thread = threading.Thread(
            target=self._run, args=(worker,), name=f"edgepack-{self.name}-{self._count}", daemon=True
        )
        self._workers.append(worker)
        worker.thread.start()

    def _run(self, me: _Worker) -> None:
        try:
            self._serve(me)
        finally:
            if me.abandoned:  # its call returned (or was cancelled) after all: it no longer counts as stuck
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self.loop.call_soon_threadsafe(self._returned)

    def _returned(self) -> None:
        self._abandoned -= 1
        if not self._workers and not self._closed:
            self._spawn()

    def _serve(self, me: _Worker) -> None:
        get, done = self._queue.get, self._done
        loop = self.loop
        while True:
            job = get()
            if job is None:
                return
            if job.answered:  # timed out while queued
                continue
            job.thread = me
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:
                job.error = exc
            job.thread = None
            if job.waiter is not None:
                with self._handoff:
                    job.finished = True
                    if not job.detached:
                        job.waiter.release()
                        if me.abandoned:
                            return
                        continue
            done.append(job)
            if not self._wake_pending:
                self._wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # loop closed while we ran
                    return
            if me.abandoned:
                return

    def _drain(self) -> None:
        self._wake_pending = False
        done = self._done
        while done:
            job = done.popleft()
            if job.answered:
                continue
            job.answered = True
            job.callback(job.result, job.error)

    # -- submitting ----------------------------------------------------------------------------------
    def submit(
        self, fn: Callable[..., Any], args: tuple, callback: Callback, cancel: Callable[[], None] | None = None
    ) -> None:
        """Run ``fn(*args)`` on a lane thread; ``callback(result, error)`` runs on the loop thread.
        ``cancel``: stops the call when it overruns the timeout (the scorer's ``cancel()``)."""
        job = _Job(fn, args, callback, self.loop.time() + self.timeout, cancel)
        self._inflight.append(job)
        self._queue.put(job)
        if self._sweep_handle is None:
            self._sweep_handle = self.loop.call_later(self._sweep_interval, self._sweep)

    def run_waiting(
        self,
        fn: Callable[..., Any],
        args: tuple,
        callback: Callback,
        wait: float,
        cancel: Callable[[], None] | None = None,
    ) -> None:
        """Like :meth:`submit`, but the loop thread first waits up to ``wait`` seconds for the result
        (GIL released) and calls ``callback`` in place when it comes in time.

        A fast call then costs two thread wake-ups and no event-loop round trip; while the loop
        waits, the lane thread has the GIL to itself (no convoy with the loop's parsing). A slow or
        stuck call is detached after ``wait``: the loop goes on serving and the result (or the
        504) arrives through the queue as with :meth:`submit`.
        """
        job = _Job(fn, args, callback, self.loop.time() + self.timeout, cancel)
        waiter = job.waiter = threading.Lock()
        waiter.acquire()
        self._queue.put(job)
        if waiter.acquire(timeout=wait):
            job.answered = True
            callback(job.result, job.error)
            return
        with self._handoff:
            job.detached = True
            finished = job.finished
        if finished:  # it finished between the timeout and the hand-off
            job.answered = True
            callback(job.result, job.error)
            return
        self._inflight.append(job)
        if self._sweep_handle is None:
            self._sweep_handle = self.loop.call_later(self._sweep_interval, self._sweep)

    def _sweep(self) -> None:
        self._sweep_handle = None
        inflight = self._inflight
        now = self.loop.time()
        while inflight and (inflight[0].answered or inflight[0].deadline <= now):
            job = inflight.popleft()
            if job.answered:
                continue
            job.answered = True
            stuck = job.thread
            if stuck is not None and not stuck.abandoned:
                stuck.abandoned = True
                self._workers.remove(stuck)
                self._abandoned += 1
                # cancel() stops every call of its scorer: only when this one is the only call running
                cancelled = job.cancel is not None and not any(j.thread is not None for j in inflight)
                if cancelled:
                    try:
                        job.cancel()  # type: ignore[misc]
                    except Exception:
                        log.exception("cancelling the overrunning scoring call failed")
                if self._abandoned <= self.MAX_ABANDONED:
                    log.error(
                        "a scoring call ran past the %g s timeout; answered 504 and started a fresh scoring "
                        "thread (the stuck one %s)",
                        self.timeout,
                        "was cancelled" if cancelled else "keeps running until the call returns",
                    )
                    self._spawn()
                elif not self._workers:
                    log.critical(
                        "%d scoring threads are stuck in calls that never return; restart the server",
                        self._abandoned,
                    )
            if self.on_timeout is not None:
                self.on_timeout()
            job.callback(None, ScoringTimeout(self.timeout))
        if inflight and not self._closed:
            self._sweep_handle = self.loop.call_later(self._sweep_interval, self._sweep)

    # -- inline ---------------------------------------------------------------------------------------
    def run_inline(self, fn: Callable[..., Any], args: tuple, cancel: Callable[[], None] | None = None) -> Any:
        """Call ``fn(*args)`` on this (loop) thread under the watchdog; raise :class:`ScoringTimeout` if
        the watchdog had to cancel it."""
        if self._watchdog is None:
            self._start_watchdog()
        self._inline_cancel = cancel
        self._inline_started = time.monotonic()
        try:
            return fn(*args)
        except Exception:
            if self._inline_cancelled:
                raise ScoringTimeout(self.timeout) from None
            raise
        finally:
            self._inline_started = 0.0
            if self._inline_cancelled:
                self._inline_cancelled = False
                if self.on_timeout is not None:
                    self.on_timeout()

    def _start_watchdog(self) -> None:
        loop_thread = threading.get_ident()

        def watch() -> None:
            interval = self._sweep_interval
            warned_at = 0.0
            while not self._watchdog_stop.wait(interval):
                started = self._inline_started
                if not started or time.monotonic() - started < self.timeout or warned_at == started:
                    continue
                warned_at = started
                cancel = self._inline_cancel
                frame = sys._current_frames().get(loop_thread)
                where = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "?"
                if cancel is not None:
                    self._inline_cancelled = True
                    log.error(
                        "an inline scoring call ran past the %g s timeout; cancelling it at:\n%s", self.timeout, where
                    )
                    try:
                        cancel()
                    except Exception:
                        log.exception("cancelling the overrunning scoring call failed")
                else:
                    log.error(
                        "an inline scoring call has run past the %g s timeout and cannot be cancelled; "
                        "the worker is blocked at:\n%s",
                        self.timeout,
                        where,
                    )

        self._watchdog = threading.Thread(target=watch, name=f"edgepack-{self.name}-watchdog", daemon=True)
        self._watchdog.start()

    # -- shutdown -------------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self._watchdog_stop.set()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for _ in self._workers:
            self._queue.put(None)
