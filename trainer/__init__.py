"""A distributed PPO trainer: Ray rollout workers, a central learner, TensorBoard monitoring."""

__all__ = ["train"]


def __getattr__(name: str):
    # Lazy: rollout workers import trainer.* modules and need none of the driver's.
    if name == "train":
        from trainer.driver import train

        return train
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
