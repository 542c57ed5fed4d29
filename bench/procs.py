"""Processes the benchmark starts (and always stops, by PID), free ports, readiness and /proc CPU counters."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def children_of(pid: int) -> list[int]:
    """All descendants of pid (children first, then theirs), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def cpu_ticks(pids: Iterable[int]) -> int:
    """utime+stime (clock ticks) summed over pids; processes that are gone count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime
    return total


def all_ticks() -> dict[int, tuple[str, int]]:
    """Every process's (name, utime+stime ticks), for naming who else used the CPU during a run."""
    result = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            name = text[text.find("(") + 1 : text.rfind(")")]
            fields = text.rsplit(")", 1)[1].split()
            result[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return result


def busiest(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], skip: set[int],
            seconds: float, top: int = 3) -> list[str]:  # fmt: skip
    """The top other processes by CPU between two all_ticks() snapshots, as 'name(pid) NN%'."""
    used = []
    for pid, (name, ticks) in after.items():
        delta = ticks - before.get(pid, (name, 0))[1]
        if pid not in skip and delta / CLK_TCK / seconds >= 0.01:  # at least 1% of a CPU
            used.append((delta, f"{name}({pid}) {delta / CLK_TCK / seconds * 100:.0f}%"))
    return [text for _, text in sorted(used, reverse=True)[:top]]


def rss_mb(pids: Iterable[int]) -> float:
    """VmRSS summed over pids, in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def system_ticks() -> tuple[int, int]:
    """(user+nice+system, steal) clock ticks summed over all CPUs, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return fields[0] + fields[1] + fields[2], fields[7]


class Proc:
    """A started process: its argv, PID, log file, and the pinning it was started with."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path, stop_signal: int) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log = log
        self.stop_signal = stop_signal

    def tree(self) -> list[int]:
        """This process and all its descendants."""
        return [self.pid, *children_of(self.pid)]

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Procs:
    """Starts processes in their own sessions and stops every one of them by PID, whatever happens."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpus: str | None = None,
        env: dict[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
    ) -> Proc:
        """Start argv (under `taskset -c cpus` when cpus is given), output to <logdir>/<name>.log."""
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        log = self.logdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log, stop_signal)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """Signal the process, wait up to grace seconds, then SIGKILL it and any descendant left, by PID."""
        tree = proc.tree() if proc.alive() else []
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, proc.stop_signal)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        deadline = time.monotonic() + grace
        for pid in tree[1:]:
            while _exists(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _exists(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        """Stop everything still registered, newest first."""
        for proc in reversed(list(self.started)):
            self.stop(proc)


def _exists(pid: int) -> bool:
    """Whether pid is a live (non-zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_ready(proc: Proc, port: int, timeout: float, path: str | None = None) -> None:
    """Wait until port accepts connections (and `GET path` answers 2xx, if given); raise with the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if port_open(port) and (path is None or _get_ok(port, path)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready on port {port} after {timeout:.0f}s:\n{proc.tail()}")


def _get_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return 200 <= conn.getresponse().status < 300
    except OSError:
        return False
    finally:
        conn.close()
