"""Checkpoints: exact resume, last-K + best retention, refusing code in a checkpoint, evaluate and
export."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch

from tests.conftest import make_small_config
from trainer import train
from trainer.evaluate import evaluate
from trainer.export import export_checkpoint
from trainer.runtime.checkpoint import CheckpointError, load_checkpoint, periodic_checkpoints

CLOCK = {"id": "tests.envs.clock:ClockEnv", "kwargs": {"length": 16}}


def clock_config(kind: str):
    return make_small_config(
        execution="inline",
        env=CLOCK,
        policy={"kind": kind},
        ppo={"rollout_steps": 16, "sequence_length": 8, "total_steps": 20 * 64},
        checkpoint={"every": 10, "keep_last": 5},
    )


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_resume_gives_bitwise_the_same_parameters_as_a_straight_run(tmp_path, kind):
    """ClockEnv episodes end exactly at iteration boundaries and reset deterministically, so the
    only state a resume could lose is the trainer's own: it must come back bit for bit."""
    straight = tmp_path / "straight"
    train(clock_config(kind), run_dir=straight)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for later in [resumed / "checkpoints/iter_0000020.pt", resumed / "checkpoints/best.pt"]:
        later.unlink(missing_ok=True)
    summary = train(resume=resumed / "checkpoints/iter_0000010.pt")
    assert summary["env_steps"] == 20 * 64 and summary["iterations"] == 20
    _, a = load_checkpoint(straight / "checkpoints/iter_0000020.pt")
    _, b = load_checkpoint(resumed / "checkpoints/iter_0000020.pt")
    for part in ("policy", "obs_rms", "return_rms"):
        for name, value in flat(a["runtime"]["learner"][part]).items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(flat(b["runtime"]["learner"][part])[name])), name
    adam_a, adam_b = a["runtime"]["learner"]["optimizer"]["state"], b["runtime"]["learner"]["optimizer"]["state"]
    assert all(torch.equal(adam_a[k]["exp_avg"], adam_b[k]["exp_avg"]) for k in adam_a)


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def test_keeps_last_k_and_the_best(tmp_path):
    config = make_small_config(
        execution="inline", ppo={"total_steps": 64 * 12}, checkpoint={"every": 2, "keep_last": 2}
    )
    train(config, run_dir=tmp_path / "run")
    kept = [p.name for p in periodic_checkpoints(tmp_path / "run/checkpoints")]
    assert kept == ["iter_0000010.pt", "iter_0000012.pt"]
    _, best = load_checkpoint(tmp_path / "run/checkpoints/best.pt")
    assert best["tracker"]["best_mean_return"] == max(
        load_checkpoint(tmp_path / f"run/checkpoints/{name}")[1]["tracker"]["best_mean_return"] for name in kept
    )
    assert not [p for p in (tmp_path / "run/checkpoints").iterdir() if p.name.endswith(".tmp")]


class RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    payload = RunsCode()
    payload.marker = str(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": payload}, evil)
    with pytest.raises(CheckpointError, match="refusing to load it"):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.fixture(scope="module")
def solved_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("solved") / "run"
    train("configs/cartpole.yaml", ["execution=inline", "ppo.total_steps=60000"], run_dir=run_dir)
    return run_dir


def test_evaluate_reports_returns_and_records_a_playable_video(solved_run, tmp_path):
    result = evaluate(solved_run, episodes=3, deterministic=True, video_dir=tmp_path / "video")
    assert result["episodes"] == 3 and len(result["returns"]) == 3
    assert result["mean_return"] >= 400
    reader = imageio.get_reader(result["video"])
    frames = reader.count_frames()
    assert frames == int(result["returns"][0])  # one frame per CartPole step (reward 1 each)
    assert reader.get_data(0).shape[-1] == 3


def test_export_runs_without_our_classes_and_matches_the_checkpoint(solved_run, tmp_path):
    artifact = export_checkpoint(solved_run, tmp_path / "policy.pt2")
    program = torch.export.load(artifact).module()
    action, _ = program(torch.zeros(3, 4), torch.zeros(2, 0, 3, 0), torch.ones(3, dtype=torch.bool))
    assert action.shape == (3, 1) and action.dtype == torch.long
    from_artifact = evaluate(artifact, episodes=3)
    from_checkpoint = evaluate(solved_run, episodes=3, deterministic=True)
    assert from_artifact["returns"] == from_checkpoint["returns"]
