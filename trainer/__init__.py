"""A distributed PPO trainer: Ray rollout workers, a central learner, TensorBoard monitoring.

`train(config, callbacks=[...])` trains; `load_policy(path).predict(obs)` acts with the result;
`Callback`, `IterationReport` and `SessionView` are the session's hooks (trainer/runtime/callbacks.py)."""

__all__ = ["Callback", "IterationReport", "SessionView", "load_policy", "train"]

# Lazy: rollout workers import trainer.core and need none of the runtime's modules.
_HOMES = {
    "train": "trainer.runtime.session",
    "load_policy": "trainer.inference",
    "Callback": "trainer.runtime.callbacks",
    "IterationReport": "trainer.runtime.callbacks",
    "SessionView": "trainer.runtime.callbacks",
}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
