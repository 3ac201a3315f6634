"""A batch's per-item work spread over the threads torch may use in this process (Ray sets that
from the CPUs an actor holds). The slow parts of an item release the GIL (scrypt, zlib and JPEG
coding, onnxruntime, OpenCV), so they run in parallel; with one thread, items run in turn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T, R = TypeVar("T"), TypeVar("R")
_pools: dict[int, ThreadPoolExecutor] = {}


def thread_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`[fn(item) for item in items]`, in order, on up to `torch.get_num_threads()` threads."""
    import torch

    items = list(items)
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    pool = _pools.get(workers) or _pools.setdefault(workers, ThreadPoolExecutor(workers, thread_name_prefix="medeid"))
    return list(pool.map(fn, items))
