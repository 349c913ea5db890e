"""Shared helpers for every benchmark: timing (warmup, N runs, median/min/max), interleaved A/B timing,
machine description, bf16 support detection and argparse/logging boilerplate.

Each benchmark module exposes `main(argv) -> dict`; the dicts it returns hold `TimingStats.to_dict()`
entries and plain numbers, so `benchmarks.run_all` can render them without knowing the benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class TimingStats:
    """Wall-clock seconds of the timed runs of one workload (warmup runs excluded)."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def from_times(cls, times: Sequence[float]) -> TimingStats:
        if not times:
            raise ValueError("at least one timed run is needed")
        return cls(statistics.median(times), min(times), max(times), len(times))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _sync(device: torch.device | str | None) -> None:
    """Wait for queued GPU work so the timer measures it (a no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Collect once, then keep Python's cyclic GC off while timing, so a collection pause cannot land in one
    run only (collecting before every run instead would cost ~0.1 s each with torch and transformers loaded)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_fn(
    fn: Callable[[], object], warmup: int = 1, repeats: int = 5, device: torch.device | str | None = None
) -> tuple[TimingStats, list[float]]:
    """Run `fn` `warmup` times untimed, then `repeats` times timed; return the stats and the raw times."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    with _gc_paused():
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    return TimingStats.from_times(times), times


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> tuple[dict[str, TimingStats], dict[str, list[float]]]:
    """Time several workloads round-robin (A B, B A, A B, ...) so slow drift on a shared machine
    (thermal, neighbours, frequency) hits all of them equally instead of biasing whichever ran last."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    with _gc_paused():
        for round_index in range(repeats):
            # Alternate the order every round: the first slot of a round is not systematically favoured.
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                start = time.perf_counter()
                fns[name]()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    return {name: TimingStats.from_times(t) for name, t in times.items()}, times


def ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Compare two interleaved series: the ratio of medians and the median of the per-round ratios
    (the paired figure is the more robust one on a noisy machine, since each pair ran back to back)."""
    paired = [a / b for a, b in zip(numerator, denominator)]
    return {
        "ratio_of_medians": statistics.median(numerator) / statistics.median(denominator),
        "paired_median": statistics.median(paired),
        "paired_min": min(paired),
        "paired_max": max(paired),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, falling back to `platform.processor()`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """True where bf16 matmuls run natively (AVX512-BF16/AMX on CPU, or a bf16-capable GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def machine_info() -> dict[str, object]:
    """Everything the results table needs to say where and how it was measured."""
    import transformers

    info: dict[str, object] = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_bf16_native": bf16_supported("cpu"),
        "cuda_available": torch.cuda.is_available(),
        # Other processes compete for the same cores on a shared machine: record how busy it was.
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast; bf16: autocast to bfloat16 on `device` (weights stay fp32, as a user would run it)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of results over seeds; a NaN result (a metric a
    seed could not compute) gives NaN rather than an error."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def reference_matmul(size: int, precision: str, device: torch.device) -> tuple[Callable[[], object], int]:
    """The `size` x `size` matmul a FLOP-limit fraction is measured against, and its FLOPs. It runs directly in the
    compute dtype of `precision`: the best a GEMM of that dtype can do, with no autocast cost."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def matmul() -> None:
        with torch.inference_mode():
            torch.matmul(a, b)

    return matmul, 2 * size**3


def profile_ops(fn: Callable[[], object], device: torch.device) -> tuple[list, Callable[[object], float]]:
    """torch.profiler's per-op averages over one `fn()` call, and their self time in µs: CPU time on a CPU, kernel
    time on a GPU."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        fn()
        if on_gpu:
            torch.cuda.synchronize(device)

    def self_time(event) -> float:
        return event.self_device_time_total if on_gpu else event.self_cpu_time_total

    return list(prof.key_averages()), self_time


def add_common_args(parser: argparse.ArgumentParser, warmup: int = 1, repeats: int = 5, device: bool = True) -> None:
    """The flags every benchmark shares: --quick, --warmup, --repeats, --threads, --verbose, and --device where the
    benchmark can run on a GPU."""
    parser.add_argument(
        "--quick", action="store_true",
        help="toy sizes and a single timed run: a smoke test of the code path, not a measurement",
    )
    if device:
        parser.add_argument("--device", type=torch.device, default=torch.device("cpu"),
                            help="where to run: cpu (default) or cuda[:N]")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed runs before timing (default {warmup})")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed runs per workload (default {repeats})")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (default: leave torch's choice, normally one per physical core)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at DEBUG level")


def apply_common_args(args: argparse.Namespace) -> None:
    """Set up logging and threads from the common flags; `--quick` forces 0 warmups and 1 timed run."""
    setup_logging(args.verbose)
    device = getattr(args, "device", None)
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is available to this process")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.warmup, args.repeats = 0, 1


def setup_logging(verbose: bool = False) -> None:
    """Plain `HH:MM:SS message` progress lines on stderr (the results go to the returned dict / markdown)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section:{name} -->", f"<!-- /section:{name} -->"


def replace_section(path: Path | str, name: str, lines: Sequence[str]) -> None:
    """Write `lines` between the markers of section `name` in a markdown file (appended when they are absent).

    Every benchmark owns one such section of `docs/benchmarks.md`; the text outside the markers is written by
    hand and never touched.
    """
    path = Path(path)
    start, end = _markers(name)
    block = "\n".join([start, *lines, end])
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
