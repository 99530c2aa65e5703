"""`evaluate`, `export` and video recording through the CLI when what they are given cannot work:
an env that cannot render, a `.pt2` this trainer did not write, an output it cannot write. Each
is one line on stderr and exit code 2, said before the work that would fail, and leaves nothing
half-written; a checkpoint renamed to `.pt2` is evaluated as the checkpoint it is."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

import trainer
from tests.conftest import cli, make_small_config
from tests.test_bad_input import SMALL

CANNOT_RENDER = {
    "NoRenderModeEnv": "its constructor takes no render_mode; {off}, or give it a render_mode argument with which "
    "render() returns an (H, W, 3) uint8 array",
    "NoFramesEnv": "its render() returned None with render_mode='rgb_array'; {off}, or make render() return an "
    "(H, W, 3) uint8 array",
}


def one_error(result, message: str, within_s: float, started: float) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr == f"error: {message}\n"
    assert time.monotonic() - started < within_s


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-iteration runs: CartPole, and each env that cannot render (trained without video)."""
    root = tmp_path_factory.mktemp("tools")
    envs = {"CartPole": "CartPole-v1", **{name: f"tests.envs.bad:{name}" for name in CANNOT_RENDER}}
    for name, env_id in envs.items():
        config = make_small_config(env={"id": env_id}, ppo={"total_steps": 64}, logging={"tensorboard": False})
        trainer.train(config, run_dir=root / name)
    return {name: root / name for name in envs}


@pytest.mark.parametrize("env", list(CANNOT_RENDER))
def test_video_of_an_env_that_cannot_render_is_refused_before_training(tmp_path, env):
    started = time.monotonic()
    result = cli(
        "train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), *SMALL,
        "--set", f"env.id=tests.envs.bad:{env}", "--set", "eval.every=1", "--set", "eval.video_every=1",
    )  # fmt: skip
    reason = CANNOT_RENDER[env].format(off="set eval.video_every: 0")
    one_error(result, f"env 'tests.envs.bad:{env}' cannot render rgb_array frames: {reason}", 30, started)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("env", list(CANNOT_RENDER))
def test_evaluate_video_of_an_env_that_cannot_render_is_refused_before_any_episode(runs, tmp_path, env):
    started = time.monotonic()
    result = cli("evaluate", str(runs[env]), "--video", str(tmp_path / "videos"))
    reason = CANNOT_RENDER[env].format(off="evaluate without --video")
    one_error(result, f"env 'tests.envs.bad:{env}' cannot render rgb_array frames: {reason}", 30, started)
    assert not (tmp_path / "videos").exists()


class Doubler(torch.nn.Module):
    def forward(self, x):
        return 2 * x


NOT_EXPORTED_HERE = {
    "random bytes": "{path} is neither an exported policy nor a checkpoint: no readable torch archive (another kind "
    "of file, or a truncated one); give a .pt2 written by python -m trainer export, a checkpoint or a run directory",
    "another module's program": "{path} is a torch.export program, but not a policy this trainer exported (it holds "
    "no config.yaml and meta.json); evaluate its checkpoint, or export that with: python -m trainer export "
    "CHECKPOINT OUT",
}


@pytest.mark.parametrize("content", list(NOT_EXPORTED_HERE))
def test_evaluate_refuses_a_pt2_this_trainer_did_not_export_in_one_line(tmp_path, content):
    path = tmp_path / "x.pt2"
    if content == "random bytes":
        path.write_bytes(os.urandom(4096))
    else:
        torch.export.save(torch.export.export(Doubler(), (torch.zeros(3),)), path)
    before = path.read_bytes()
    started = time.monotonic()
    one_error(cli("evaluate", str(path)), NOT_EXPORTED_HERE[content].format(path=path), 30, started)
    assert path.read_bytes() == before


def test_a_checkpoint_renamed_pt2_is_evaluated_as_the_checkpoint_without_warnings(runs, tmp_path):
    checkpoint = sorted((runs["CartPole"] / "checkpoints").glob("iter_*.pt"))[-1]
    renamed = tmp_path / "policy.pt2"
    renamed.write_bytes(checkpoint.read_bytes())
    original, as_pt2 = (
        cli("evaluate", str(checkpoint), "--episodes", "3"),
        cli("evaluate", str(renamed), "--episodes", "3"),
    )
    assert as_pt2.returncode == 0 and as_pt2.stderr == "", as_pt2.stderr
    assert as_pt2.stdout == original.stdout and as_pt2.stdout.startswith("3 episodes: return ")


def test_export_over_an_existing_file_replaces_it_whole(runs, tmp_path):
    out = tmp_path / "policy.pt2"
    out.write_text("an older export\n")
    result = cli("export", str(runs["CartPole"]), str(out))
    assert result.returncode == 0 and result.stdout == f"exported {out}\n", result.stderr
    assert trainer.load_policy(out).iteration is None  # the new program, read back
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt2"]  # no temporary file left beside it


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a directory without write permission")
def test_export_into_a_directory_without_write_permission_is_one_line(runs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        started = time.monotonic()
        result = cli("export", str(runs["CartPole"]), str(locked / "policy.pt2"))
        one_error(
            result,
            f"export: cannot write {locked / 'policy.pt2'}: cannot write in {locked} (Permission denied); "
            "give a path in a directory you can write",
            30,
            started,
        )
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
