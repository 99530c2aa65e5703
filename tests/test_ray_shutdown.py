"""The CLI with embedded Ray leaves no Ray processes behind: after a normal end, an error, SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.ray

RAY_MARKERS = ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard", "log_monitor", "runtime_env")


def ray_processes() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if any(marker in cmdline for marker in RAY_MARKERS):
            found.add(proc.pid)
    return found


def wait_for_no_new_ray_processes(before: set[int], timeout_s: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stray = ray_processes() - before
        if not stray:
            return stray
        time.sleep(0.5)
    return ray_processes() - before


def run_cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


SMALL_RUN = ["--set", "ppo.rollout_steps=32", "--set", "workers.envs_per_worker=2"]


def test_normal_end_leaves_no_ray_processes(tmp_path):
    before = ray_processes()
    proc = run_cli(
        "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), "--set", "ppo.total_steps=2048", *SMALL_RUN
    )
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert (tmp_path / "run" / "summary.json").exists()
    assert "Token authentication" not in err  # the embedded Ray's token mode is set, not warned about
    assert wait_for_no_new_ray_processes(before) == set()


def test_env_error_exits_cleanly_with_one_message(tmp_path):
    before = ray_processes()
    proc = run_cli(
        "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"),
        "--set", "env.id=tests.envs.faults:BrokenCartPole", "--set", "env.kwargs={fail_at_step: 5}", *SMALL_RUN,
    )  # fmt: skip
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2
    assert "error: env 'tests.envs.faults:BrokenCartPole' raised RuntimeError: simulator exploded (worker" in err
    assert "Traceback" not in err
    assert wait_for_no_new_ray_processes(before) == set()


def read_lines(stream, into: list) -> threading.Thread:
    """Collect (arrival time, line) from a pipe on a thread, so the test can wait on it."""

    def run() -> None:
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_is_answered_at_once_and_a_second_one_names_the_newest_checkpoint(tmp_path):
    """Iterations of ~1.5 s: the first Ctrl-C is acknowledged within a second, not at the end of
    the iteration; the second stops at once, naming the newest checkpoint, which is intact."""
    from trainer.runtime.checkpoint import load_checkpoint

    before = ray_processes()
    run_dir = tmp_path / "run"
    proc = run_cli(
        "configs/cartpole.yaml", "--run-dir", str(run_dir), "--set", "ppo.total_steps=10240000",
        "--set", "env.id=tests.envs.faults:SlowCartPole", "--set", "env.kwargs={step_sleep_s: 0.02}",
        "--set", "checkpoint.every=1", *SMALL_RUN,
    )  # fmt: skip
    lines: list = []
    reader = read_lines(proc.stdout, lines)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("iter_*.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    while not any("SIGINT: stopping after this iteration" in line for _, line in lines) and time.monotonic() < sent + 5:
        time.sleep(0.05)
    [(said_at, said)] = [(t, line) for t, line in lines if "SIGINT: stopping after this iteration" in line]
    assert said_at - sent < 1.5, said_at - sent
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    reader.join(timeout=5)
    assert proc.returncode == 130, err
    newest = load_checkpoint(run_dir)[0]
    assert err.endswith(
        f"error: stopped at once by a second SIGINT; newest checkpoint {newest}; "
        f"continue with: python -m trainer train --resume {run_dir}\n"
    ), err
    assert "Traceback" not in err
    print(f"\nfirst Ctrl-C acknowledged after {said_at - sent:.2f}s: {said}")
    assert wait_for_no_new_ray_processes(before) == set()


def test_sigterm_with_embedded_ray_writes_a_final_checkpoint(tmp_path):
    """ray.init() installs its own SIGTERM handler (exit at once); the trainer takes SIGTERM back,
    so `kill`, `docker stop` and `ray job stop` end the run with a final checkpoint."""
    from trainer.runtime.checkpoint import load_checkpoint

    before = ray_processes()
    run_dir = tmp_path / "run"
    proc = run_cli(
        "configs/cartpole.yaml", "--run-dir", str(run_dir), "--set", "ppo.total_steps=10240000",
        "--set", "checkpoint.every=0", "--set", "logging.progress_interval_s=0.5",
    )  # fmt: skip
    assert proc.stdout.readline().startswith("run directory:")
    assert proc.stdout.readline().startswith("step ")  # training is under way
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stopped = [line for line in err.splitlines() if line.startswith("error: stopped by SIGTERM at env step ")]
    assert len(stopped) == 1 and "Traceback" not in err, err
    assert load_checkpoint(run_dir)[1]["env_steps"] == int(stopped[0].split("env step ")[1].split(";")[0])
    assert wait_for_no_new_ray_processes(before) == set()


@pytest.mark.parametrize("process", ["raylet", "gcs_server"])
def test_embedded_ray_dying_under_the_run_ends_it_in_one_line_with_summary_and_no_orphans(tmp_path, process):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "configs/cartpole.yaml", "--run-dir", str(run_dir), "--set", "ppo.total_steps=10000000",
        "--set", "checkpoint.every=2", *SMALL_RUN,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "iter_0000002.pt").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        ray_side = psutil.Process(proc.pid).children(recursive=True)  # the embedded Ray's processes
        next(p for p in ray_side if p.name() == process).kill()
        start = time.monotonic()
        _out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 2, err[-2000:]
    newest = sorted((run_dir / "checkpoints").glob("iter_*.pt"))[-1]
    assert last.startswith(f"error: the embedded Ray's {process} died (killed by SIGKILL) at env step "), last
    assert last.endswith(f"; newest checkpoint {newest}; continue with: python -m trainer train --resume {run_dir}")
    assert (run_dir / "summary.json").exists() and elapsed < 10
    time.sleep(1.0)
    alive = [p for p in ray_side if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]  # no agent outlives it
