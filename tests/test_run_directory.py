"""What a run directory keeps safe, from the user's side (the CLI): one live run per directory, a
folder of the user's never written into, resuming from an older checkpoint never losing what the
new timeline trains, damaged checkpoints refused with the intact one named, a hand-edited
config.yaml applied on resume, and a config that cannot be written stopping in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import INLINE_ARGS, REPO_ROOT, cli
from trainer import load_policy
from trainer.runtime.checkpoint import CheckpointError, load_checkpoint

INLINE = INLINE_ARGS


def start_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_second_run_in_a_live_runs_directory_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "configs/cartpole.yaml", "--run-dir", str(run_dir), "--resume", "auto", *INLINE]
    first = start_cli(*args, "--set", "ppo.total_steps=10000000", "--set", "checkpoint.every=2")
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "iter_0000002.pt").exists())
        start = time.monotonic()
        second = cli(*args, "--set", "ppo.total_steps=10000000")
        one_line_error(
            second, f"run directory {run_dir} is in use by a live run (pid {first.pid} on ", "another --run-dir"
        )
        assert time.monotonic() - start < 15
        assert first.poll() is None  # the first goes on
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.communicate()
    resumed = cli(*args, "--set", "ppo.total_steps=256")  # the dead run's lock is gone with it
    assert resumed.returncode == 0, resumed.stderr
    assert "nothing trained: the run was at step" in resumed.stdout or "resumed at iteration" in resumed.stdout


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("ppo:\n  lr: 3.0e-4\n")  # the user's own, not a run's
    result = cli("train", "configs/cartpole.yaml", "--run-dir", str(folder), *INLINE)
    one_line_error(result, f"run directory {folder} holds files that are not a run of this trainer (config.yaml)")
    (folder / "data.csv").write_text("1,2\n")
    result = cli("train", "configs/cartpole.yaml", "--run-dir", str(folder), *INLINE)
    one_line_error(
        result, f"run directory {folder} holds files that are not a run of this trainer (config.yaml, data.csv)"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "data.csv"]
    assert (folder / "config.yaml").read_text() == "ppo:\n  lr: 3.0e-4\n"


def test_run_name_cannot_leave_the_logging_dir(tmp_path):
    result = cli(
        "train", "configs/cartpole.yaml", "--run-name", "../../escaped", "--set", f"logging.dir={tmp_path}", *INLINE
    )
    one_line_error(result, "--run-name '../../escaped' must be one folder name inside logging.dir")
    assert not (tmp_path.parent.parent / "escaped").exists()


def test_resuming_from_an_older_checkpoint_keeps_the_new_timeline_and_sets_the_old_one_aside(tmp_path):
    run_dir = tmp_path / "run"
    steps = 32 * 2 * 2  # one iteration
    first = cli("train", "configs/cartpole.yaml", "--run-dir", str(run_dir), *INLINE,
                "--set", f"ppo.total_steps={6 * steps}", "--set", "checkpoint.every=1")  # fmt: skip
    assert first.returncode == 0, first.stderr
    checkpoints = run_dir / "checkpoints"
    assert [p.name for p in sorted(checkpoints.glob("iter_*"))] == [f"iter_000000{i}.pt" for i in (4, 5, 6)]
    old_six = (checkpoints / "iter_0000006.pt").read_bytes()
    resumed = cli("train", "--resume", str(checkpoints / "iter_0000004.pt"), "--set", f"ppo.total_steps={8 * steps}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from iteration 4, before the newest checkpoint: iter_0000005.pt, iter_0000006.pt" in resumed.stdout
    assert [p.name for p in sorted(checkpoints.glob("iter_*"))] == [f"iter_000000{i}.pt" for i in (6, 7, 8)]
    assert load_checkpoint(run_dir)[1]["iteration"] == 8  # the new timeline's newest, kept
    aside = next(checkpoints.glob("superseded-*"))
    assert sorted(p.name for p in aside.iterdir() if p.name.startswith("iter_")) == [
        "iter_0000005.pt",
        "iter_0000006.pt",
    ]
    assert (aside / "iter_0000006.pt").read_bytes() == old_six  # the old future is kept, not deleted
    assert (checkpoints / "iter_0000006.pt").read_bytes() != old_six


def flip_a_byte_inside_tensor_data(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    data[entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra) + entry.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_checkpoints_are_refused_naming_the_newest_intact_one(tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", "configs/cartpole.yaml", "--run-dir", str(run_dir), *INLINE,
                 "--set", "ppo.total_steps=384", "--set", "checkpoint.every=1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    newest, previous = run_dir / "checkpoints" / "iter_0000003.pt", run_dir / "checkpoints" / "iter_0000002.pt"
    flip_a_byte_inside_tensor_data(newest)  # torch.load alone would read it as other weights
    for command in (["evaluate", str(run_dir), "--episodes", "1"], ["train", "--resume", str(run_dir)]):
        one_line_error(
            cli(*command), f"checkpoint {newest} is corrupted: its entry", "fails the CRC-32 check",
            f"the newest intact checkpoint is {previous} (give it instead)",
        )  # fmt: skip
    assert cli("evaluate", str(previous), "--episodes", "1").returncode == 0
    with pytest.raises(CheckpointError, match=r"config\.yaml is a text file, not a checkpoint; give a run directory"):
        load_policy(run_dir / "config.yaml")


def test_a_hand_edited_config_is_applied_on_resume_and_a_finished_run_says_it_trained_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = cli("train", "configs/cartpole.yaml", "--run-dir", str(run_dir), *INLINE, "--set", "ppo.total_steps=256")
    assert first.returncode == 0, first.stderr
    again = cli("train", "--resume", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert "nothing trained: the run was at step 256 of 256 already" in again.stdout
    config = run_dir / "config.yaml"
    config.write_text(
        config.read_text().replace("total_steps: 256", "total_steps: 512").replace("lr: 0.001", "lr: 0.0003")
    )
    edited = cli("train", "--resume", str(run_dir))
    assert edited.returncode == 0, edited.stderr
    assert (
        "resuming with ppo.lr 0.001 -> 0.0003, ppo.total_steps 256 -> 512 "
        f"({config} differs from the checkpoint's config)" in edited.stdout
    )
    assert load_checkpoint(run_dir)[1]["config"]["ppo"]["lr"] == 0.0003
    assert "this session trained 256 of them" in edited.stdout


def test_a_config_that_cannot_be_written_stops_in_one_line_and_leaves_nothing(tmp_path):
    import resource

    def tiny_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))  # config.yaml is ~1.4 kB

    run_dir = tmp_path / "run"
    result = cli("train", "configs/cartpole.yaml", "--run-dir", str(run_dir), *INLINE, preexec_fn=tiny_files)
    one_line_error(result, f"could not write {run_dir / 'config.yaml'}: File too large; nothing was trained")
    assert not run_dir.exists()
