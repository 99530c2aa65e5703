"""A distributed PPO trainer: Ray rollout workers, a central learner, TensorBoard monitoring."""

from trainer.driver import train

__all__ = ["train"]
