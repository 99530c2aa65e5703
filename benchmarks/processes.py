"""The benchmark's child processes: running one with each output line timestamped, waiting for
Ray's processes to exit before the next timing, and the progress log on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.rows import REPO_ROOT

Lines = list[tuple[float, str]]  # (seconds since launch, line) for every output line


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def process_tree(root) -> list:
    """`root` (a psutil.Process) and every process under it: a driver and its embedded Ray."""
    import psutil

    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(proc) -> float:
    """CPU seconds (user + system) a psutil.Process has used."""
    times = proc.cpu_times()
    return times.user + times.system


def child_pids() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children(recursive=True)}


@contextmanager
def children_reaped(wait: bool = True) -> Iterator[None]:
    """After a Ray shutdown its processes linger a moment; let those started inside the block go
    before the next timing (children there before, e.g. multiprocessing's resource tracker, stay)."""
    before = child_pids()
    yield
    if wait:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and child_pids() - before:
            time.sleep(0.1)


def set_args(overrides) -> list[str]:
    """`--set key=value` for each override, as the trainer's and memory's command lines take them."""
    return [arg for item in overrides for arg in ("--set", item)]


def run_subprocess(cmd: list[str], timeout_s: float) -> tuple[int, Lines, float]:
    """Run cmd from the repo root; every output line with the seconds since launch it arrived at."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    launch = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: Lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        stamp = time.perf_counter() - launch
        lines.append((stamp, line.rstrip("\n")))
        if stamp > timeout_s:
            proc.kill()
            break
    code = proc.wait(timeout=max(1.0, timeout_s))
    return code, lines, time.perf_counter() - launch


def failed(cmd: list[str], code: int, lines: Lines, what: str = "") -> RuntimeError:
    """The error for a child that did not deliver, with the last 30 lines it printed."""
    tail = "\n".join(line for _, line in lines[-30:])
    return RuntimeError(f"{' '.join(cmd)} exited {code}{what}:\n{tail}")


def result_line(lines: Lines, prefix: str, cmd: list[str], code: int):
    """The JSON after `prefix` on the last line that starts with it."""
    for _, line in reversed(lines):
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    raise failed(cmd, code, lines, " without a result line")
