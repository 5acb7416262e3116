"""An ordered map over a process pool with a bounded number of batches in flight.

`multiprocessing.Pool.imap` reads its whole input ahead of the workers, which for a streamed Hub
dataset or a large archive means holding everything in memory; here at most `2 * num_proc` batches
are queued. Results come back in input order, so every decision taken from them (dedup keeps the
first copy, the FIM draw per document) is the same for any worker count. With one process the work
runs inline, which keeps tests and small inputs free of pool start-up cost.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any


def default_num_proc() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def ordered_map(
    fn: Callable[[list[Any]], Any],
    batches: Iterable[list[Any]],
    num_proc: int,
    initializer: Callable[..., None],
    initargs: tuple = (),
) -> Iterator[Any]:
    """`fn(batch)` for each batch, in order, on `num_proc` processes that ran `initializer(*initargs)`."""
    if num_proc <= 1:
        initializer(*initargs)
        for batch in batches:
            yield fn(batch)
        return
    # fork shares the (read-only) initargs without pickling them; elsewhere spawn pickles them.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(num_proc, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(fn, (batch,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
