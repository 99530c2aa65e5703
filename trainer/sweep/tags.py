"""The TensorBoard tags a sweep trial reports to Tune, known from its config alone, so a misspelled
`--metric` is refused before any trial starts. Those that trainer/runtime/metrics.py's
iteration_scalars makes are read off it; the others are named here as the learner, the workers,
the session and evaluation name them. tests/test_sweep.py compares them with what real trials
report."""

from __future__ import annotations

import difflib

from trainer.core.config import Config
from trainer.core.errors import UserError
from trainer.core.timing import phase_tag
from trainer.runtime.metrics import iteration_tags

LOSSES = ("total", "policy", "value", "entropy", "approx_kl", "clip_fraction", "grad_norm",
          "first_minibatch_ratio_dev", "explained_variance", "stopped_early")  # fmt: skip
OBS_STATS = ("count", "mean_avg", "std_mean", "std_min", "std_max")  # of an env with vector observations
LEARNER = ("charts/learning_rate", "normalizer/return_std", "perf/learner_bf16", *(f"losses/{name}" for name in LOSSES),
           *(f"normalizer/obs_{name}" for name in OBS_STATS))  # fmt: skip
WORKER_TIMINGS = (*(phase_tag(phase) for phase in ("forward", "env", "rollout")), "env_failures")  # per worker
SESSION = ("learner/restarts", "perf/driver_cpu_s")
RETURN_WINDOW = "charts/mean_return_last20"  # the session's, once 20 episodes have ended
EVAL_RESULT_TAGS = ("eval/return_mean", "eval/return_std", "eval/length_mean", "eval/policy_iteration", "eval/env_step")


def trial_tags(config: Config) -> tuple[set[str], set[str]]:
    """(the tags of every iteration, the tags of only some: episode returns, evaluation results)."""
    phases = ["collect", "copy", "learn"]  # the runtime's perf/<phase>_s (iteration_scalars adds its share)
    phases += ["allreduce"] * (config.learner.num_learners > 1) + ["transfer"] * (config.execution == "ray")
    metrics = {*LEARNER, *(phase_tag(phase) for phase in phases)}
    if config.learner.device != "cpu":  # "auto" too: on a node with a GPU
        metrics.add("perf/learner_gpu_memory_mb")
    every, some = iteration_tags(metrics, WORKER_TIMINGS, config)
    every |= set(SESSION)
    some.add(RETURN_WINDOW)
    if config.eval.every:
        every.add("eval/skipped")
        some |= set(EVAL_RESULT_TAGS) | ({"eval/stochastic_return_mean"} if config.eval.deterministic else set())
    return every, some


def check_metric(metric: str, configs: list[Config]) -> None:
    """Refuse a --metric that none of the trials' configs reports, naming the closest tags."""
    known = set().union(*(every | some for every, some in map(trial_tags, configs)))
    if metric in known:
        return
    evaluated = configs[0].model_copy(update={"eval": configs[0].eval.model_copy(update={"every": 1})})
    if metric in trial_tags(evaluated)[1]:
        raise UserError(f"--metric {metric} is reported only with evaluation on; add --set eval.every=N (iterations)")
    close = difflib.get_close_matches(metric, sorted(known), n=3, cutoff=0.6)  # the closest first
    hint = f"did you mean {_either(close)}?" if close else "give a tag such as charts/episodic_return_mean"
    raise UserError(f"--metric {metric!r} is not a scalar the trials report; {hint}")


def _either(names: list[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
