"""Group commit: what the threads of one process write at the same moment, written by one
statement.

A write's cost in PostgreSQL is mostly per statement, not per row (opening and locking the
tables and their indexes, the snapshot, the commit: docs/PERFORMANCE.md). So while one
thread's statement runs, the writes other threads hand in queue up, and the next statement
writes them all. Nobody waits for a batch to fill: a write that finds no statement running
goes at once, alone, as it would without this; batches form only under load, from what
arrived during the statement before.

Leader and followers (as PostgreSQL's own WAL group commit): the thread that finds no writer
becomes the leader and writes what is queued (its own write included) on its own database
connection; the others wait. A leader hands the lead to the first write still queued when
its statement is done, so no request writes for others longer than one statement.

What a batch cannot write is written alone by its own thread, as without this: a batch of
one, a batch that failed (it is one transaction, so it wrote nothing: the culprit then gets
its own error, every other write its own commit), and a write the batch left out. So a
caller's rules (202 only once durable, an idempotency key's owner, a refusal) are those of
its `alone` write; the batch only has to write all of its rows or none, and say which.
"""

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger(__name__)


class _Write(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "lead")

    def __init__(self, item: Item) -> None:
        self.item = item
        # Held until the write is done or handed the lead, released once: a one-shot signal
        # of two C calls, where an Event's Condition costs a few Python ones a wait and a set.
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Result | None = None
        self.lead = False  # woken to lead, not with a result


class GroupCommit(Generic[Item, Result]):
    """`write_batch(items)` writes two or more items in one transaction and answers, in the
    items' order, each one's result, or None for an item it left out; raising means it wrote
    nothing. `max_batch` bounds a statement's size (and a leader's wait)."""

    def __init__(
        self,
        write_batch: Callable[[Sequence[Item]], Sequence[Result | None]],
        *,
        max_batch: int = 64,
    ) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queued: list[_Write[Item, Result]] = []
        self._leading = False

    def write(self, item: Item, alone: Callable[[], Result]) -> Result:
        """`item` written, with whatever else is queued, and its result; or `alone()`'s
        (which raises what it raises) where no batch wrote it."""
        mine: _Write[Item, Result] = _Write(item)
        with self._lock:
            self._queued.append(mine)
            follow = self._leading
            self._leading = True
        if follow:
            mine.done.acquire()
            if not mine.lead:
                return mine.result if mine.result is not None else alone()
        return self._lead(mine, alone)

    def _lead(self, mine: _Write[Item, Result], alone: Callable[[], Result]) -> Result:
        with self._lock:
            batch = self._queued[: self._max_batch]
            del self._queued[: self._max_batch]
        try:
            if len(batch) == 1:  # only mine: written alone, still leading, so others queue
                return alone()
            try:
                results = self._write_batch([write.item for write in batch])
            except Exception as error:  # noqa: BLE001 (it wrote nothing: each is written alone)
                # (The error's class only: its text can quote the rows' values.)
                logger.info("a batch of %d writes failed (%s): each is written alone",
                            len(batch), type(error).__name__)  # fmt: skip
                results = [None] * len(batch)
            for write, result in zip(batch, results, strict=True):
                write.result = result
        finally:
            for write in batch:  # (whatever happened: none is left waiting)
                if write is not mine:
                    write.done.release()
            self._hand_on()
        return mine.result if mine.result is not None else alone()

    def _hand_on(self) -> None:
        """The lead to the first write still queued, or to nobody."""
        with self._lock:
            if not self._queued:
                self._leading = False
                return
            successor = self._queued[0]
        successor.lead = True
        successor.done.release()
