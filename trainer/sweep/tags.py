"""The TensorBoard tags a sweep trial reports to Tune, known from its config alone, so a misspelled
`--metric` is refused before any trial starts. It mirrors what trainer/runtime/metrics.py's
iteration_scalars, the learner, the session and evaluation name; tests/test_sweep.py compares it
with what real trials report."""

from __future__ import annotations

import difflib

from trainer.core.config import Config
from trainer.core.errors import UserError

LOSSES = ("total", "policy", "value", "entropy", "approx_kl", "clip_fraction", "grad_norm",
          "first_minibatch_ratio_dev", "explained_variance", "stopped_early")  # fmt: skip
PERF = ("steps_per_s", "iteration_s", "driver_cpu_s", "policy_lag", "slowest_rollout_s", "coordination_s")
OBS_STATS = ("count", "mean_avg", "std_mean", "std_min", "std_max")  # of an env with vector observations
WORKER = ("forward_s", "env_s", "rollout_s", "steps_per_s", "env_failures", "restarts")  # workers/<i>/...
EPISODE_TAGS = (
    *(f"charts/episodic_{name}_{stat}" for name in ("return", "length") for stat in ("mean", "min", "max")),
    "charts/mean_return_last20",
)  # absent from an iteration in which no episode ended (the last one, until 20 have)
EVAL_RESULT_TAGS = ("eval/return_mean", "eval/return_std", "eval/length_mean", "eval/policy_iteration", "eval/env_step")


def trial_tags(config: Config) -> tuple[set[str], set[str]]:
    """(the tags of every iteration, the tags of only some: episode returns, evaluation results)."""
    phases = ["collect", "copy", "learn"]  # perf/<phase>_s and its share of the iteration
    phases += ["allreduce"] * (config.learner.num_learners > 1) + ["transfer"] * (config.execution == "ray")
    every = {"charts/episodes", "charts/learning_rate", "learner/restarts", "workers/restarts_total"}
    every |= {f"losses/{name}" for name in LOSSES} | {f"perf/{name}" for name in PERF}
    every |= {f"perf/{phase}_{unit}" for phase in phases for unit in ("s", "share")}
    every |= {"normalizer/return_std"} | {f"normalizer/obs_{name}" for name in OBS_STATS}
    every |= {f"workers/{index}/{name}" for index in range(config.workers.num_workers) for name in WORKER}
    if config.learner.device != "cpu":  # "auto" too: on a node with a GPU
        every.add("perf/learner_gpu_memory_mb")
    some = set(EPISODE_TAGS)
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
