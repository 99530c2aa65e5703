"""Monitoring: TensorBoard event files read back with TensorBoard's own reader and served by a
real TensorBoard; console progress as plain lines off a terminal and as a live bar on one."""

from __future__ import annotations

import math
import os
import pty
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT, make_small_config
from trainer import train

PROMISED_TAGS = [
    "charts/episodic_return_mean", "charts/episodic_return_min", "charts/episodic_return_max",
    "charts/episodic_length_mean", "charts/episodic_length_min", "charts/episodic_length_max",
    "charts/learning_rate", "charts/episodes",
    "losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clip_fraction",
    "losses/explained_variance", "losses/grad_norm", "losses/first_minibatch_ratio_dev",
    "perf/steps_per_s", "perf/iteration_s",
    "perf/collect_s", "perf/collect_share",
    "perf/copy_s", "perf/copy_share", "perf/learn_s", "perf/learn_share", "losses/total", "losses/stopped_early",
    "normalizer/obs_mean_avg", "normalizer/obs_std_mean", "normalizer/obs_std_min", "normalizer/obs_std_max",
    "normalizer/return_std", "normalizer/obs_count",
    "workers/0/steps_per_s", "workers/1/steps_per_s", "workers/0/restarts", "workers/1/restarts",
    "workers/restarts_total", "hparams/final_mean_return",
]  # fmt: skip
ANSI_ESCAPE = "\x1b["


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    config = make_small_config(execution="inline", ppo={"total_steps": 2048})
    train(config, run_dir=run_dir)
    return run_dir


def test_every_promised_tag_is_written_with_increasing_steps_and_finite_values(short_run):
    accumulator = EventAccumulator(str(short_run))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    missing = [tag for tag in PROMISED_TAGS if tag not in tags]
    assert not missing, f"missing tags: {missing}"
    for tag in tags:
        events = accumulator.Scalars(tag)
        steps = [event.step for event in events]
        assert steps == sorted(set(steps)), f"{tag}: steps not strictly increasing: {steps}"
        assert all(math.isfinite(event.value) for event in events), tag
    assert accumulator.Scalars("perf/steps_per_s")[-1].step == 2048
    assert "config/text_summary" in accumulator.Tags()["tensors"]
    assert set(accumulator.PluginTagToContent("hparams")) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tensorboard_server_serves_the_return_curve(short_run):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "trainer", "tensorboard", str(short_run), "--port", str(port), "--host", "127.0.0.1"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=.&tag=charts/episodic_return_mean"
    try:
        deadline = time.monotonic() + 60
        points = None
        while time.monotonic() < deadline and not points:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    points = __import__("json").loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert points, "TensorBoard never answered the scalars API"
        expected = EventAccumulator(str(short_run))
        expected.Reload()
        assert [p[1] for p in points] == [e.step for e in expected.Scalars("charts/episodic_return_mean")]
        assert points[0][2] == pytest.approx(expected.Scalars("charts/episodic_return_mean")[0].value)
    finally:
        server.terminate()
        server.wait(timeout=30)


CLI_RUN = [
    sys.executable, "-m", "trainer", "train", "configs/cartpole.yaml", "--set", "execution=inline",
    "--set", "ppo.total_steps=4096", "--set", "logging.progress_interval_s=0.01",
]  # fmt: skip


def test_progress_off_a_terminal_is_plain_lines(tmp_path):
    result = subprocess.run(
        [*CLI_RUN, "--run-dir", str(tmp_path / "run")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert ANSI_ESCAPE not in result.stdout and ANSI_ESCAPE not in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert lines and lines[-1].startswith("step 4096/4096 (100%)")
    assert "steps/s" in lines[-1] and "return" in lines[-1]


def test_progress_on_a_terminal_is_a_live_bar(tmp_path):
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*CLI_RUN, "--run-dir", str(tmp_path / "run")],
        cwd=REPO_ROOT, stdin=terminal, stdout=terminal, stderr=terminal, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    os.close(terminal)
    output = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(controller)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    assert ANSI_ESCAPE in text
    assert "4096/4096" in text and "steps/s" in text and "━" in text
    assert not any(line.startswith("step ") for line in text.splitlines())
