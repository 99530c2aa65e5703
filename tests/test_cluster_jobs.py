"""`ray job submit` against a real Ray head on localhost: the path docs/cluster.md documents.

One head for the module, started as a user would (`ray start --head --block` with the dashboard
and job server), token authentication on: RAY_AUTH_MODE=token and a token generated here, read
from RAY_AUTH_TOKEN_PATH by the head and by every `ray job ...` command. Jobs run with the
environment the head runs in (this venv, first on PATH, as an image's would be): the runtime_env
holds only the uploaded working directory, no pip/uv packages, so nothing is installed at
submission. `ray stop` is not scoped to one head (it stops every Ray on the machine), so the head
is stopped by SIGTERM to `ray start --block`, as `docker stop` or Kubernetes do, and the check for
stray processes looks for this head's own processes: all of them inherit a marker variable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT
from trainer.runtime.checkpoint import load_checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
MARKER = "TRAINER_CLUSTER_TEST_HEAD"
PROGRESS_LINE = re.compile(r"^step (\d+)/(\d+) \(\d+%\)  \d+ steps/s  return [-\d.na]+$", re.MULTILINE)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# Small enough for this 2-core machine; 1024 env steps per iteration (2 workers x 4 envs x 128).
CARTPOLE_STEPS = 20480
LONG_STEPS = 30720


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(marker: str, temp_dir: str) -> list[psutil.Process]:
    """Live processes of this head: they carry the marker variable or name its temp dir."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if temp_dir in " ".join(proc.info["cmdline"] or []) or proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class RayHead:
    """A Ray head with the job server, started by `ray start --head --block` in a temp dir."""

    def __init__(self) -> None:
        # Short path: Ray's unix sockets live under it and must stay below 108 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rayjobs-", dir="/tmp")
        self.token_path = Path(self.temp_dir) / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` makes
        self.token_path.chmod(0o600)
        self.marker = Path(self.temp_dir).name
        self.dashboard_port = free_port()
        self.gcs_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
        base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"  # `python` in the entrypoint = this venv
        # What a submitter needs: token mode on and the token (file or RAY_AUTH_TOKEN).
        self.client_env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}
        head_env = {
            **self.client_env,
            MARKER: self.marker,
            # `ray job stop` sends SIGTERM, then SIGKILL after this many seconds (Ray's default: 3).
            "RAY_JOB_STOP_WAIT_TIME_S": "30",
        }
        command = [
            str(RAY), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}", "--num-cpus=4",
            "--include-dashboard=true", f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
            f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        self.log = open(Path(self.temp_dir) / "head.log", "w")  # closed in stop()
        self.proc = subprocess.Popen(command, env=head_env, stdout=self.log, stderr=subprocess.STDOUT)
        self.stopped = False

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ray start exited: {self.head_log()}"
            try:
                self.api("/api/jobs/")
                return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.5)
        raise AssertionError(f"job server not up within {timeout_s}s: {self.head_log()}")

    def head_log(self) -> str:
        return (Path(self.temp_dir) / "head.log").read_text()[-3000:]

    def api(self, path: str):
        request = urllib.request.Request(
            self.address + path, headers={"Authorization": f"Bearer {self.token_path.read_text()}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def ray(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """A `ray` CLI command run from the repository root, as a submitter would."""
        return subprocess.run(
            [str(RAY), *args],
            cwd=REPO_ROOT,
            env=env or self.client_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, job_id: str, *trainer_args: str, wait: bool = True) -> subprocess.CompletedProcess:
        flags = ["--address", self.address, "--submission-id", job_id, "--working-dir", "."]
        entrypoint = ["python", "-m", "trainer", "train", *trainer_args]
        return self.ray("job", "submit", *flags, *([] if wait else ["--no-wait"]), "--", *entrypoint, timeout=240)

    def logs(self, job_id: str) -> str:
        result = self.ray("job", "logs", "--address", self.address, job_id)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def status(self, job_id: str) -> str:
        return self.api(f"/api/jobs/{job_id}")["status"]

    def wait_for_end(self, job_id: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (status := self.status(job_id)) not in TERMINAL:
            assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout_s}s"
            time.sleep(0.5)
        return status

    def session_dir(self) -> Path:
        return Path(self.temp_dir) / "session_latest"

    def stop(self) -> list[str]:
        """SIGTERM to `ray start --block` (it stops the node's processes); returns the processes
        of this head still alive afterwards, after killing them so nothing is left either way."""
        if self.stopped:
            return []
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 20
        while (left := session_processes(self.marker, self.temp_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        described = []
        for proc in left:
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return described


@pytest.fixture(scope="module")
def head():
    if not RAY.exists():
        pytest.skip("the `ray` CLI is not installed next to this Python")
    ray_head = RayHead()
    try:
        ray_head.wait_ready()
        yield ray_head
    finally:
        ray_head.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster_runs")


@pytest.mark.parametrize("token", ["none", "wrong"])
def test_attaching_without_the_right_token_is_one_line_naming_the_token_settings(head, tmp_path, token):
    base = {k: v for k, v in head.client_env.items() if not k.startswith("RAY_AUTH")}
    env = {**base, "PYTHONPATH": str(REPO_ROOT)}
    if token == "wrong":
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    run_dir = tmp_path / "run"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "train", "configs/cartpole.yaml", "--address", f"127.0.0.1:{head.gcs_port}",
         "--run-dir", str(run_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    problem = "wants an auth token" if token == "none" else "refused this process's auth token"
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: the Ray cluster at 127.0.0.1:{head.gcs_port} {problem}: set RAY_AUTH_MODE=token and "
        "RAY_AUTH_TOKEN_PATH to the cluster's token file (or RAY_AUTH_TOKEN to the token; `ray get-auth-token` on "
        "the head prints it)\n"
    )
    assert time.monotonic() - start < 15 and not run_dir.exists()


def test_job_server_refuses_requests_without_the_token(head):
    base = {k: v for k, v in head.client_env.items() if not k.startswith("RAY_AUTH")}
    no_token = head.ray("job", "list", "--address", head.address, env={**base, "RAY_AUTH_MODE": "disabled"})
    assert no_token.returncode != 0
    assert "Authentication required" in no_token.stdout + no_token.stderr
    wrong = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    wrong_token = head.ray("job", "list", "--address", head.address, env=wrong)
    assert wrong_token.returncode != 0
    assert "Authentication failed" in wrong_token.stdout + wrong_token.stderr
    assert head.ray("job", "list", "--address", head.address).returncode == 0


def test_cartpole_job_succeeds_with_progress_logs_events_and_checkpoints(head, runs):
    run_dir = runs / "cartpole"
    start = time.monotonic()
    result = head.submit(
        "cartpole", "configs/cartpole.yaml", "--run-dir", str(run_dir),
        "--set", f"ppo.total_steps={CARTPOLE_STEPS}", "--set", "checkpoint.every=5",
        "--set", "logging.progress_interval_s=1",
    )  # fmt: skip
    elapsed = time.monotonic() - start
    print(f"\ncartpole job ({CARTPOLE_STEPS} env steps): submission to SUCCEEDED in {elapsed:.1f}s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert head.status("cartpole") == "SUCCEEDED"
    status = head.ray("job", "status", "--address", head.address, "cartpole")
    assert "Job 'cartpole' succeeded" in status.stdout + status.stderr
    assert elapsed < 120

    logs = head.logs("cartpole")
    progress = PROGRESS_LINE.findall(logs)
    assert progress, logs
    assert progress[-1] == (str(CARTPOLE_STEPS), str(CARTPOLE_STEPS))
    assert "\x1b[" not in "".join(line for line in logs.splitlines() if line.startswith("step "))
    assert f"run directory: {run_dir}" in logs
    assert "Traceback" not in logs

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == CARTPOLE_STEPS and summary["execution"] == "ray"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.pt", "iter_0000010.pt", "iter_0000015.pt", "iter_0000020.pt"], checkpoints
    assert load_checkpoint(run_dir)[1]["env_steps"] == CARTPOLE_STEPS
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert events.Scalars("perf/steps_per_s")[-1].step == CARTPOLE_STEPS
    assert "charts/episodic_return_mean" in events.Tags()["scalars"]

    # What reached the cluster: the code and configs, not the venv, runs, git or wheels; and no
    # per-job package install (the runtime_env holds only the working directory).
    [package] = [p for p in (head.session_dir() / "runtime_resources" / "working_dir_files").iterdir() if p.is_dir()]
    uploaded = {p.name for p in package.iterdir()}
    assert {"trainer", "workers", "configs"} <= uploaded
    assert not uploaded & {".venv", "venv", "runs", ".git", ".whl", ".pytest_cache"}, uploaded
    for manager in ("pip", "uv", "conda"):
        installed = head.session_dir() / "runtime_resources" / manager
        assert not installed.is_dir() or not any(installed.iterdir()), f"{manager} installed packages for a job"
    assert set(head.api("/api/jobs/cartpole")["runtime_env"]) == {"working_dir"}


def test_stopped_job_writes_a_final_checkpoint_and_the_same_command_resubmitted_completes(head, runs):
    """One idempotent command (`--run-dir DIR --resume auto`) for the first submission and every
    retry: it starts the run, then continues it from where `ray job stop` left it."""
    run_dir = runs / "long"
    command = (
        "configs/cartpole.yaml", "--run-dir", str(run_dir), "--resume", "auto",
        "--set", f"ppo.total_steps={LONG_STEPS}", "--set", "checkpoint.every=0",  # no checkpoint but the final one
        "--set", "logging.progress_interval_s=0.5",
    )  # fmt: skip
    result = head.submit("long", *command, wait=False)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 120
    while not [int(step) for step, _ in PROGRESS_LINE.findall(head.logs("long")) if int(step) >= 8192]:
        assert head.status("long") in {"PENDING", "RUNNING"}, head.logs("long")
        assert time.monotonic() < deadline, "no progress within 120s"
        time.sleep(0.5)

    start = time.monotonic()
    stop = head.ray("job", "stop", "--address", head.address, "long")  # waits for the job to end
    stop_s = time.monotonic() - start
    assert stop.returncode == 0, stop.stderr
    assert head.status("long") == "STOPPED"
    print(f"\nray job stop: job ended {stop_s:.1f}s after the request")
    logs = head.logs("long")
    match = re.search(
        r"^error: stopped by SIGTERM at env step (\d+); newest checkpoint \S+; continue with: "
        r"python -m trainer train --resume (.+)$", logs, re.M,
    )  # fmt: skip
    assert match, logs[-3000:]
    stopped_at = int(match.group(1))
    assert match.group(2) == str(run_dir) and 0 < stopped_at < LONG_STEPS
    assert "Traceback" not in logs
    _path, state = load_checkpoint(run_dir)
    assert state["env_steps"] == stopped_at
    assert json.loads((run_dir / "summary.json").read_text())["interrupted_by"] == "SIGTERM"

    resumed = head.submit("resume", *command)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert head.status("resume") == "SUCCEEDED"
    logs = head.logs("resume")
    assert f"resumed at iteration {state['iteration']}, env step {stopped_at}" in logs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == LONG_STEPS and summary["interrupted_by"] is None
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = [event.step for event in events.Scalars("perf/steps_per_s")]
    assert steps == sorted(set(steps)) and steps[-1] == LONG_STEPS


def test_job_with_a_bad_config_fails_fast_with_the_one_line_error(head, runs):
    run_dir = runs / "bad"
    start = time.monotonic()
    result = head.submit("bad", "configs/cartpole.yaml", "--run-dir", str(run_dir), "--set", "ppo.lr=-1")
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert head.status("bad") == "FAILED"
    assert elapsed < 60
    logs = head.logs("bad")
    expected = "error: invalid config (configs/cartpole.yaml): ppo.lr: Input should be greater than 0 (got -1)"
    assert expected in logs.splitlines(), logs
    assert "Traceback" not in logs
    assert not run_dir.exists()


def test_job_asking_more_than_the_cluster_has_fails_in_seconds_naming_the_numbers(head, runs):
    """The head has 4 CPUs; 4 workers and the learner ask 5. No actor is created, nothing waits."""
    run_dir = runs / "too_big"
    start = time.monotonic()
    result = head.submit(
        "too_big", "configs/cartpole.yaml", "--run-dir", str(run_dir), "--set", "workers.num_workers=4"
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0 and head.status("too_big") == "FAILED"
    print(f"\njob too big for the cluster: FAILED {elapsed:.1f}s after submission")
    assert elapsed < 60
    expected = (
        "error: the cluster cannot hold this run: it asks 5 CPUs (workers.num_workers=4 x workers.num_cpus=1 + "
        "learner.num_cpus=1) and the cluster has 4; lower those keys or add nodes (with an autoscaler, set "
        "cluster.wait_for_resources_s to wait for nodes)"
    )
    logs = head.logs("too_big")
    assert expected in logs.splitlines(), logs
    assert "Traceback" not in logs and "rollout worker" not in logs


def test_stopping_the_head_leaves_no_processes(head):
    assert session_processes(head.marker, head.temp_dir), "the marker should find the running head"
    assert head.stop() == []
