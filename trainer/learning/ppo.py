"""The PPO loss on one minibatch: clipped surrogate, optionally clipped value loss, entropy bonus.

Returns the loss and its named terms plus diagnostics, so the learner logs what it optimizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.core.config import PPOConfig
from trainer.learning.buffer import Minibatch


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
    batch: Minibatch, logprob: torch.Tensor, entropy: torch.Tensor, value: torch.Tensor, config: PPOConfig
) -> LossTerms:
    log_ratio = logprob - batch.logprob
    ratio = log_ratio.exp()
    advantage = batch.advantage
    if config.normalize_advantages and advantage.numel() > 1:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)

    surrogate = torch.max(-advantage * ratio, -advantage * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef))
    policy_loss = surrogate.mean()

    value_error = (value - batch.ret) ** 2
    if config.value_clip is not None:
        clipped = batch.value + (value - batch.value).clamp(-config.value_clip, config.value_clip)
        value_error = torch.max(value_error, (clipped - batch.ret) ** 2)
    value_loss = 0.5 * value_error.mean()

    entropy_mean = entropy.mean()
    loss = policy_loss - config.ent_coef * entropy_mean + config.vf_coef * value_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance k3 estimator
        clip_fraction = ((ratio - 1).abs() > config.clip_coef).float().mean()
        ratio_max_dev = (ratio - 1).abs().max()
    return LossTerms(loss, policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction, ratio_max_dev)
