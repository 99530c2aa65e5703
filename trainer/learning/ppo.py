"""The PPO loss on one minibatch: clipped surrogate, optionally clipped value loss, entropy bonus.

Returns the loss and its named terms plus diagnostics, so the learner logs what it optimizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.core.config import PPOConfig
from trainer.learning.buffer import Minibatch
from trainer.learning.distributed import Collective


@dataclass
class LossTerms:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor
    ratio_max_dev: torch.Tensor
    """max |ratio - 1| over the minibatch: exactly 0 on the first minibatch if rollouts and
    learner agree on normalization, hidden states and resets."""


def ppo_loss(
    batch: Minibatch,
    logprob: torch.Tensor,
    entropy: torch.Tensor,
    value: torch.Tensor,
    config: PPOConfig,
    collective: Collective,
) -> LossTerms:
    """`batch` is this rank's part of the minibatch (all of it, with one learner): every mean is
    this part's sum over the whole minibatch's count, and advantages are normalized with the whole
    minibatch's mean and std, so the ranks' terms (and gradients) add up to one learner's. Where
    some samples are padding (`batch.valid`, multi-agent), every mean is over the valid ones."""
    weight, count = None, batch.count
    if batch.valid is not None:
        weight = batch.valid.to(logprob.dtype)
        count = collective.sum(weight.sum().reshape(1)).clamp(min=1.0).reshape(())

    def total(x: torch.Tensor) -> torch.Tensor:
        return x.sum() if weight is None else (x * weight).sum()

    def mean(x: torch.Tensor) -> torch.Tensor:
        return total(x) / count

    def normalize(advantage: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            center = collective.sum(total(advantage).reshape(1)) / count
            spread = collective.sum(total((advantage - center) ** 2).reshape(1))
            var = spread / (count - 1) if weight is None else spread / (count - 1).clamp(min=1.0)
        return (advantage - center) / (var.sqrt() + 1e-8)

    log_ratio = logprob - batch.logprob
    ratio = log_ratio.exp()
    advantage = batch.advantage
    if config.normalize_advantages and batch.count > 1:
        advantage = normalize(advantage)

    surrogate = torch.max(-advantage * ratio, -advantage * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef))
    policy_loss = mean(surrogate)

    value_error = (value - batch.ret) ** 2
    if config.value_clip is not None:
        clipped = batch.value + (value - batch.value).clamp(-config.value_clip, config.value_clip)
        value_error = torch.max(value_error, (clipped - batch.ret) ** 2)
    value_loss = 0.5 * mean(value_error)

    entropy_mean = mean(entropy)
    loss = policy_loss - config.ent_coef * entropy_mean + config.vf_coef * value_loss
    with torch.no_grad():
        approx_kl = mean((ratio - 1) - log_ratio)  # the low-variance k3 estimator
        clip_fraction = mean(((ratio - 1).abs() > config.clip_coef).float())
        deviation = (ratio - 1).abs() if weight is None else (ratio - 1).abs() * weight
        ratio_max_dev = deviation.max() if ratio.numel() else ratio.new_zeros(())
    return LossTerms(loss, policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction, ratio_max_dev)
