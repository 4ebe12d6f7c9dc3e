"""What the operating system says a process costs: CPU time, resident memory, open files.

Every figure comes from ``/proc`` (the kernel's own accounting), never from the process's
own idea of itself. All functions raise ``ProcessLookupError`` once the process is gone.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str:
    try:
        with open(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise ProcessLookupError(path) from None


def _stat_fields(pid: int) -> List[str]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    text = _read(f"/proc/{pid}/stat")
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (utime + stime)."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state) of proc(5): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def thread_run_seconds(pid: int) -> float:
    """Time on CPU summed over the process's live threads, in nanosecond resolution.

    From ``/proc/PID/task/*/schedstat`` (first field: ns on CPU). Threads that exited are not
    counted, so it is for windows in which no thread ends (an idle process).
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for task in tasks:
        try:
            total += int(_read(f"/proc/{pid}/task/{task}/schedstat").split()[0])
        except ProcessLookupError:
            continue
    return total / 1e9


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS) in MiB."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(f"/proc/{pid}/status has no VmRSS (a zombie?)")


def fd_count(pid: int) -> int:
    """How many file descriptors the process holds open."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def thread_count(pid: int) -> int:
    """How many threads the process has."""
    return int(_stat_fields(pid)[17])


def descendants(pid: int) -> List[Tuple[int, int]]:
    """Every live descendant of ``pid`` (children, grandchildren, ...), each with its parent."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parents[int(name)] = int(_stat_fields(int(name))[1])
            except (ProcessLookupError, IndexError, ValueError):
                continue
    found: List[Tuple[int, int]] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found.extend((child, parent) for child in kids)
        frontier.extend(kids)
    return found


def peak_rss_mib(pid: int) -> float:
    """Highest resident memory the process has had so far (VmHWM), in MiB."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(pid)


def private_mib(pid: int) -> float:
    """Pages only this process maps (Private_Clean + Private_Dirty of smaps_rollup), in MiB:
    what a forked copy costs beyond the pages it still shares with its parent."""
    total = 0
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def tree_peaks_mib(pid: int) -> Tuple[float, float]:
    """The process's resident memory now plus its descendants' peaks, in MiB, two ways:
    (each descendant's own peak (VmHWM) added up, the same with the descendants below a
    direct child counted by their private pages only).

    Sampled every few milliseconds during a job, the highest value is the agent plus its
    worker at the worker's peak, which a sum of current figures can miss between samples.
    python-apt runs dpkg from a fork of the worker: that copy's RSS counts every page it
    shares with the worker (the whole apt cache), so the first figure counts the cache
    twice; in the second the worker (a direct child) counts its own peak whole, as apt-get's
    figure does, and the fork only what is its own.
    """
    added_up = unique = rss_mib(pid)
    for child, parent in descendants(pid):
        try:
            peak = peak_rss_mib(child)
            own = peak if parent == pid else private_mib(child)
        except ProcessLookupError:
            continue
        added_up += peak
        unique += own
    return added_up, unique


@dataclass
class CpuWindow:
    """CPU used by one process over a wall-clock window: utime+stime (10 ms ticks) and the
    per-thread scheduler total (ns)."""

    cpu_seconds: float
    thread_run_seconds: float
    wall_seconds: float

    @property
    def percent(self) -> float:
        """utime+stime as a percentage of one core."""
        return 100.0 * self.cpu_seconds / self.wall_seconds

    @property
    def thread_run_percent(self) -> float:
        """The per-thread scheduler total as a percentage of one core."""
        return 100.0 * self.thread_run_seconds / self.wall_seconds


def measure_cpu(pids: List[int], seconds: float) -> List[CpuWindow]:
    """CPU each process uses over the same ``seconds`` of wall time (measured together)."""
    start_wall = time.monotonic()
    start = [(cpu_seconds(pid), thread_run_seconds(pid)) for pid in pids]
    time.sleep(seconds)
    end = [(cpu_seconds(pid), thread_run_seconds(pid)) for pid in pids]
    wall = time.monotonic() - start_wall
    return [CpuWindow(after[0] - before[0], after[1] - before[1], wall)
            for before, after in zip(start, end)]


@dataclass
class RssSampler:
    """Samples a process's resident memory on a background thread until stopped.

    ``with RssSampler(pid) as sampler: ...`` then ``sampler.peak_mib``, ``sampler.peak_tree_mib``
    and ``sampler.peak_unique_mib`` (the process plus its descendants, e.g. an apt worker: the
    two figures of ``tree_peaks_mib``) and ``sampler.samples``.
    """

    pid: int
    interval: float = 0.02
    samples: List[float] = field(default_factory=list)
    peak_tree_mib: float = 0.0
    peak_unique_mib: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    @property
    def peak_mib(self) -> float:
        """Highest resident memory of the process itself seen while sampling."""
        return max(self.samples) if self.samples else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_mib(self.pid))
                added_up, unique = tree_peaks_mib(self.pid)
                self.peak_tree_mib = max(self.peak_tree_mib, added_up)
                self.peak_unique_mib = max(self.peak_unique_mib, unique)
            except ProcessLookupError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
