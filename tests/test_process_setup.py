"""Process-wide settings are made where a process starts (trainer/core/process.py), never by the
library's classes: building a runtime leaves the caller's torch threads and RNG as they were, and
a learner's initial weights come from the run's seed alone."""

from __future__ import annotations

import torch

from trainer.core.envs import probe_run
from trainer.learning.learner import Learner
from trainer.runtime.inline import InlineRuntime


def test_building_a_learner_and_workers_changes_nothing_process_wide(small_config) -> None:
    config = small_config(learner={"torch_threads": 1}, workers={"torch_threads": 1})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        runtime = InlineRuntime(config, probe_run(config))
        try:
            assert torch.get_num_threads() == 2
            assert torch.equal(torch.rand(3), expected)  # the weights' initialization drew from a forked RNG
        finally:
            runtime.close()
    finally:
        torch.set_num_threads(threads)


def test_a_learners_initial_weights_come_from_the_run_seed(small_config) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        config = small_config(seed=seed)
        torch.manual_seed(seed + 1000)  # whatever the process's RNG holds
        return Learner(config, probe_run(config)).policy.state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
