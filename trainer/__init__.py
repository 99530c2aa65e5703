"""A distributed PPO trainer: Ray rollout workers, a central learner, TensorBoard monitoring."""

__all__ = ["train"]


def __getattr__(name: str):
    # Lazy: rollout workers import trainer.core and need none of the runtime's modules.
    if name == "train":
        from trainer.runtime.session import train

        return train
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
