"""What every suite shares: the machine's description, timing and peak memory, the Markdown tables."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import time
import tracemalloc


def machine() -> str:
    """One line: CPU model and cores, memory, GPU if any, and the versions the figures depend on."""
    import ray
    import torch

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        memory = f", {total_kib / 2**20:.0f} GiB"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; Python {platform.python_version()}, "
            f"Ray {ray.__version__}, torch {torch.__version__}")


def timed(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def peak_rss(fn, every_s: float = 0.002) -> tuple[float, float]:
    """Run `fn` once: (seconds, peak resident memory above the process's before the call, MiB), sampled
    every `every_s` on a thread. Unlike `peak_bytes` it sees native memory (onnxruntime, torch, OpenCV)."""
    import threading

    import psutil

    process = psutil.Process()
    idle, peak, done = process.memory_info().rss, [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(every_s)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        fn()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return seconds, (peak[0] - idle) / 2**20


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _shown(value) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def markdown(suite: str, rows: list[tuple]) -> str:
    lines = [f"### {suite} ({machine()})", "", "| measure | value | unit | note |", "| --- | ---: | --- | --- |"]
    lines += [f"| {measure} | {_shown(value)} | {unit} | {note} |" for measure, value, unit, note in rows]
    return "\n".join(lines)


def report(results: dict[str, list[tuple]], minutes: float) -> str:
    """Every suite's figures in one Markdown table, headed by the machine and the date."""
    lines = [f"Measured {dt.date.today().isoformat()} on {machine()}, in {minutes:.0f} min "
             f"(`python jobs/benchmark.py all`).", "",
             "| suite | measure | value | unit | note |", "| --- | --- | ---: | --- | --- |"]
    lines += [f"| {suite} | {measure} | {_shown(value)} | {unit} | {note} |"
              for suite, rows in results.items() for measure, value, unit, note in rows]
    return "\n".join(lines) + "\n"
