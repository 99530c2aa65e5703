"""Truncation bootstraps by default; `ppo.bootstrap_truncated: false` treats it as termination
(the comparison setting), and a first-minibatch ratio away from 1 is reported loudly."""

from __future__ import annotations

import io

import pytest

from tests.conftest import make_buffer
from trainer.core.envs import probe_env
from trainer.core.messages import EpisodeStats
from trainer.runtime.progress import ProgressReporter
from trainer.runtime.stats import IterationStats
from trainer.runtime.training_session import TrainingSession


@pytest.mark.parametrize("bootstrap_truncated", [True, False])
def test_truncated_step_bootstraps_only_when_asked(bootstrap_truncated):
    g = 0.9
    buffer = make_buffer(T=1, N=1)
    buffer.reward.fill_(1.0)
    buffer.value.fill_(0.5)
    buffer.truncated.fill_(True)
    buffer.bootstrap_value.fill_(2.0)
    buffer.last_value.fill_(7.0)  # the next episode's first value: never used across the end
    buffer.compute_advantages(g, 0.95, bootstrap_truncated=bootstrap_truncated)
    expected = 1.0 + g * 2.0 - 0.5 if bootstrap_truncated else 1.0 - 0.5
    assert buffer.advantage.item() == pytest.approx(expected)
    assert buffer.ret.item() == pytest.approx(expected + 0.5)


class ReportsMetrics:
    """A runtime whose iterations report the given learner metrics, one per iteration, and no episodes."""

    def __init__(self, *metrics: dict[str, float]) -> None:
        self.metrics = iter(metrics)

    def iterate(self) -> IterationStats:
        metrics = next(self.metrics)
        return IterationStats(metrics, EpisodeStats(), [], policy_lag=int(metrics.pop("perf/policy_lag", 0)))

    def close(self) -> None:
        pass


def test_ratio_away_from_one_is_reported(small_config, tmp_path):
    config = small_config(checkpoint={"every": 0})
    out = io.StringIO()
    progress = ProgressReporter(1000, 1000.0, stream=out)
    runtime = ReportsMetrics(
        {"losses/first_minibatch_ratio_dev": 3e-7, "perf/policy_lag": 0.0},
        {"losses/first_minibatch_ratio_dev": 0.2, "perf/policy_lag": 1.0},  # lag: expected
        {"losses/first_minibatch_ratio_dev": 0.02},
    )
    session = TrainingSession(config, tmp_path, probe_env(config.env), runtime, progress)
    session.step()
    session.step()
    assert out.getvalue() == ""
    session.step()
    assert "WARNING: first-minibatch PPO ratio deviates from 1 by 2.00e-02" in out.getvalue()
    session.finish(completed=True)
    assert session.ratio_warnings == 1
