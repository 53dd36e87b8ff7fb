"""What every benchmark shares: the environment it measured in, the device it measures on, time and memory as it
reads them, a clean process per measurement, and the markdown of its report.

Importing this module imports neither torch nor MONAI: the functions that need torch import it themselves, so a
benchmark that measures in fork-server processes (:func:`in_forkserver`) keeps torch out of its own process.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bench import BenchError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

#: What ``--device`` takes: "auto" is CUDA when torch sees a CUDA device, else the CPU.
DEVICES = ("auto", "cpu", "cuda")
#: Libraries whose versions every report names (by their distribution names), in the reports' words.
LIBRARIES = {"MONAI": "monai", "MONAI Label": "monailabel"}


# ---- the environment ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """Where and when a benchmark measured, as the measuring process saw it.

    Attributes:
        date: when (UTC, to the minute).
        load: 1-min load average at the start of the run; None where the OS does not tell.
        cpu: the CPU model.
        cores: logical CPU cores of the machine.
        os: the platform in words.
        python: the Python version.
        versions: library -> version: MONAI and MONAI Label, and torch where a device was resolved.
        device: the resolved torch device, "cpu" or "cuda"; None for a benchmark that runs no torch.
        device_name: the GPU's name on CUDA, else the CPU model.
        threads: torch intra-op threads (0 without a device).
    """

    date: str
    load: float | None
    cpu: str
    cores: int | None
    os: str
    python: str
    versions: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    device_name: str = ""
    threads: int = 0

    @property
    def load_words(self) -> str:
        return "n/a" if self.load is None else f"{self.load:.1f}"


def load_average() -> float | None:
    """The 1-min load average now (None where the OS does not tell)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def measure_environment(device: str | None = None, *, threads: int = 0, load: float | None = None) -> Environment:
    """The environment of this process. With ``device`` (one of :data:`DEVICES`), torch is imported, the device
    resolved (:func:`resolve_device`) and, when ``threads`` > 0, torch's intra-op threads set to it first.

    ``load``: the load average read when the run started (:func:`load_average`), before the run added its own work
    (a fork server importing torch, say); read now when not given.

    Raises:
        BenchError: see :func:`resolve_device`.
    """
    versions = {}
    for words, distribution in LIBRARIES.items():
        try:
            versions[words] = version(distribution)
        except PackageNotFoundError:
            versions[words] = "not installed"
    resolved, name, torch_threads = None, "", 0
    if device is not None:
        import torch

        resolved = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        name, torch_threads = device_name(torch.device(resolved)), torch.get_num_threads()
        versions = {"torch": torch.__version__, **versions}
    return Environment(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        load=load_average() if load is None else load, cpu=cpu_name(), cores=os.cpu_count(), os=platform.platform(),
        python=platform.python_version(), versions=versions, device=resolved, device_name=name, threads=torch_threads,
    )


def machine_facts() -> dict[str, str]:
    """The environment without a device, as words by key (``slpt bench soak`` lists them on one line)."""
    env = measure_environment()
    return {
        "date": env.date, "cores": str(env.cores), "cpu": env.cpu, "os": env.os, "python": env.python,
        "monailabel": env.versions["MONAI Label"], "load": env.load_words,
    }


# ---- the device --------------------------------------------------------------------------------------------------


def device_problem(name: str) -> str | None:
    """What is wrong with ``--device name`` before torch is asked anything; None when it is one of :data:`DEVICES`."""
    return None if name in DEVICES else f"--device must be one of {', '.join(DEVICES)}, got {name!r}"


def resolve_device(name: str) -> str:
    """``--device name`` as the benchmark measures on: "cpu" or "cuda" (:func:`models.device.pick_device`; "auto":
    CUDA when torch sees a CUDA device).

    Raises:
        BenchError: a name not in :data:`DEVICES`, or "cuda" where torch sees no CUDA device.
    """
    if problem := device_problem(name):
        raise BenchError(problem)
    import torch

    from models.device import pick_device

    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for, but torch sees no CUDA device")
    return pick_device(None if name == "auto" else name).type


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU model."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


# ---- time and memory ---------------------------------------------------------------------------------------------


class Clock:
    """Wall time of work on ``device``, with CUDA synchronised at both ends (the GPU's queued work counts)."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = device
        self.cuda = str(device).startswith("cuda")
        self.started = 0.0

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self.started = time.perf_counter()

    def stop(self) -> float:
        """Seconds since :meth:`start`."""
        self._sync()
        return time.perf_counter() - self.started

    def time(self, work: Callable[[], T]) -> tuple[T, float]:
        """``work()`` and its seconds."""
        self.start()
        out = work()
        return out, self.stop()


def resident_bytes() -> int:
    """Resident set of this process now (``VmRSS``; where there is no /proc, its peak)."""
    return _status_bytes("VmRSS")


def peak_resident_bytes() -> int:
    """Peak resident set of this process (``VmHWM``, the high-water mark; ``ru_maxrss`` where there is no /proc).

    In a process forked from a fork server it starts at what the fork server had loaded."""
    return _status_bytes("VmHWM")


def _status_bytes(key: str) -> int:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def reset_cuda_peak(device: torch.device) -> int:
    """Wait for ``device``'s queued work and restart torch's count of its peak; the bytes allocated now."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def cuda_peak_bytes(device: torch.device) -> int | None:
    """Peak bytes torch allocated on ``device`` since :func:`reset_cuda_peak`; None off CUDA."""
    import torch

    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


# ---- a clean process per measurement -----------------------------------------------------------------------------


def in_forkserver(function: Callable[..., T], *args: object, preload: Sequence[str], what: str, hint: str) -> T:
    """``function(*args)`` in a new process, forked from a :mod:`multiprocessing` fork server that has imported
    ``preload``; its result (or its exception) comes back.

    Each call is a new process, so one measurement's peak memory, heap or threads cannot hide or slow the next; the
    fork server starts once per run (importing MONAI takes tens of seconds on a busy CPU, forking milliseconds).
    A process that dies (killed for memory, say) becomes a :class:`BenchError` naming ``what`` it was doing and
    ``hint`` (what to try).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool as exc:
            raise BenchError(f"the process {what} died (killed for memory? {hint})") from exc


# ---- the report --------------------------------------------------------------------------------------------------


def report_header(
    title: str, command: str, env: Environment, facts: Sequence[str], *, load_note: str, date_note: str = ""
) -> str:
    """The top of a report: the title, the command line, when and where it ran (the device and torch threads where
    it resolved one), the software, then the benchmark's own ``facts``, one bullet each.

    ``load_note``: what the load average means for this benchmark's figures; ``date_note``: words after the date.
    """
    lines = [
        f"# {title}",
        "",
        f"- Command: `{command}`",
        f"- Date: {env.date}{date_note}",
        f"- Machine: {env.cpu}, {env.cores} CPU cores, {env.os}; 1-min load average at the start {env.load_words} "
        f"({load_note})",
    ]
    if env.device is not None:
        gpu = f" ({env.device_name})" if env.device == "cuda" else ""
        lines.append(f"- Device: {env.device}{gpu}; {env.threads} torch threads")
    software = ", ".join(f"{name} {number}" for name, number in env.versions.items())
    lines.append(f"- Software: Python {env.python}, {software}")
    lines += [f"- {fact}" for fact in facts]
    return "\n".join(lines) + "\n"


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]], align: str) -> str:
    """A markdown table; ``align`` has a letter per column: "l" (left: words) or "r" (right: figures)."""
    if len(align) != len(columns) or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one of l, r per column ({len(columns)}), got {align!r}")

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(map(str, cells)) + " |"

    rule = "|" + "".join("---:|" if side == "r" else "---|" for side in align)
    return "\n".join([line(columns), rule, *map(line, rows)])


def human_bytes(count: float) -> str:
    """``1536 -> "1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB"):
        if abs(count) < 1024:
            return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.2f} GiB"
