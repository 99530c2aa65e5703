"""A sweep: the base config and search space checked, Ray Tune's Tuner built (scheduler, trial
resources, storage) and run or resumed, then results.csv and best_config.yaml written."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from trainer.core.config import load_config
from trainer.core.errors import UserError
from trainer.sweep.space import Axis, load_space, trial_config

TUNE_DIR = "tune"  # Tune's own state (what --resume reads), beside runs/, results.csv and best_config.yaml
RUNS_DIR = "runs"  # one run directory per trial: the sweep's TensorBoard logdir
SCHEDULERS = ("fifo", "asha", "pbt")
FIXED_UNDER_PBT = ("policy.", "env.", "ppo.normalize_obs", "execution", "learner.num_learners")


class SweepStopped(UserError):
    """Ctrl-C stopped the sweep: finished trials are in results.csv, the rest wait for --resume."""

    exit_code = 130


@dataclass(frozen=True)
class SweepArgs:
    config: str
    space: str
    trials: int
    out: str
    scheduler: str = "asha"
    metric: str = "charts/episodic_return_mean"
    mode: str = "max"
    max_concurrent: int | None = None
    overrides: tuple[str, ...] = ()
    address: str | None = None
    resume: bool = False
    grace_steps: int | None = None
    perturbation_steps: int | None = None


def sweep(args: SweepArgs) -> dict:
    """Run (or, with `resume`, continue) the sweep; returns where its results went."""
    config = load_config(args.config, args.overrides)
    base = config.model_dump()
    axes = load_space(args.space, base)
    out = Path(args.out).resolve()
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be at least 1, got {args.max_concurrent}")
    if (out / TUNE_DIR).exists() and not args.resume:
        raise UserError(f"{out} already holds a sweep; continue it with --resume, or pick another --out")
    if args.resume and not (out / TUNE_DIR).exists():
        raise UserError(f"{out} holds no sweep to resume (no {TUNE_DIR}/); start it without --resume")

    # Imported here: Tune (and torch, through the trial) only once the input is known to be good.
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from trainer.runtime.ray_connect import connect, disconnect
    from trainer.sweep.results import TrialLines, best_row, collect, describe, write_best_config, write_results
    from trainer.sweep.trial import PPOTrial, trial_resources

    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"  # trials see the paths the command was given
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # the trials write their own TensorBoard files
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables, only the lines per trial
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # a failed trial is its line and results.csv row
    warnings.filterwarnings("ignore", message=".*reuse_actors.*")  # each trial is a fresh process on purpose
    scheduler = _scheduler(args, config.ppo.total_steps, config.steps_per_iteration, axes)
    concurrent = args.max_concurrent or 1
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    connect(config, args.address, cpus=concurrent * max(_trial_cpus(base, axes), 1.0))
    try:
        trainable = tune.with_resources(
            tune.with_parameters(PPOTrial, base=base, runs_dir=str(out / RUNS_DIR), metric=args.metric),
            resources=lambda values: trial_resources(base, values),
        )
        param_space = {axis.key: axis.to_tune() for axis in axes}
        if args.resume:
            tuner = tune.Tuner.restore(str(out / TUNE_DIR), trainable, resume_unfinished=True, param_space=param_space)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    metric=args.metric,
                    mode=args.mode,
                    num_samples=args.trials,
                    max_concurrent_trials=args.max_concurrent,
                    scheduler=scheduler,
                    reuse_actors=False,
                ),
                run_config=tune.RunConfig(
                    name=TUNE_DIR,
                    storage_path=str(out),
                    verbose=0,
                    callbacks=[TrialLines(args.metric, args.scheduler), JsonLoggerCallback(), CSVLoggerCallback()],
                    failure_config=tune.FailureConfig(max_failures=0),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=4 if args.scheduler == "pbt" else 2,  # PBT exploits others' checkpoints
                        checkpoint_frequency=config.checkpoint.every or 10,
                    ),
                ),
            )
        tuner.fit()
        analysis = tune.ExperimentAnalysis(str(out / TUNE_DIR))
        rows = collect(analysis, args.metric, args.mode, args.scheduler, out / RUNS_DIR)
    finally:
        disconnect()
    keys = [axis.key for axis in axes]
    write_results(out / "results.csv", rows, keys, args.metric)
    best = best_row(rows)
    if best is not None:
        write_best_config(out / "best_config.yaml", best, base, args.metric, args.scheduler)
    counts = {status: sum(row.status == status for row in rows) for status in ("completed", "stopped", "error")}
    unfinished = len(rows) - sum(counts.values())
    print(
        f"{len(rows)} trials: {counts['completed']} completed, {counts['stopped']} stopped early, "
        f"{counts['error']} failed" + (f", {unfinished} unfinished" if unfinished else "")
    )
    print(f"results: {out / 'results.csv'}; TensorBoard: python -m trainer tensorboard {out / RUNS_DIR}")
    if best is not None:
        print(f"best: {best.trial} ({describe(best.values)}), {args.metric} "
              f"{best.score:.4g}; train it: python -m trainer train {out / 'best_config.yaml'}")  # fmt: skip
    if unfinished:
        raise SweepStopped(
            f"the sweep stopped with {unfinished} trials unfinished; continue it: the same command with --resume"
        )
    return {"out": str(out), "rows": rows, "best": best}


def _trial_cpus(base: dict, axes: list[Axis]) -> float:
    """The most CPUs one trial's placement group asks, over every edge value of the space."""
    from trainer.runtime.placement import trial_bundles

    def cpus(values: dict) -> float:
        return sum(bundle.get("CPU", 0.0) for bundle in trial_bundles(trial_config(base, values)))

    return max([cpus({})] + [cpus({axis.key: value}) for axis in axes for value in axis.values])


def _scheduler(args: SweepArgs, budget: int, iteration_steps: int, axes: list[Axis]):
    """FIFO runs every trial to its budget; ASHA stops the weak ones at rungs of env steps
    (grace, 3 x grace, ...); PBT replaces the bottom quarter's weights and hyperparameters with
    perturbed copies of the top quarter's every `perturbation_steps`."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if args.scheduler == "fifo":
        return FIFOScheduler()
    if args.scheduler == "asha":
        grace = args.grace_steps or max(iteration_steps, budget // 9)
        if not 0 < grace <= budget:
            raise UserError(f"--grace-steps must be between 1 and the budget ppo.total_steps={budget}, got {grace}")
        return ASHAScheduler(time_attr="env_steps", max_t=budget, grace_period=grace, reduction_factor=3)
    interval = args.perturbation_steps or max(iteration_steps, budget // 8)
    mutations = {axis.key: axis.to_tune() for axis in axes if axis.mutable}
    fixed = [key for key in mutations if key.startswith(FIXED_UNDER_PBT)]
    if fixed:
        raise UserError(
            f"--scheduler pbt cannot perturb {fixed[0]}: a trial restored from another's checkpoint keeps its "
            "network and env; make it a grid axis (fixed per trial) or leave it out of the space"
        )
    if not mutations:
        raise UserError("--scheduler pbt needs at least one key with a sampler other than grid to perturb")
    return PopulationBasedTraining(
        time_attr="env_steps", perturbation_interval=interval, hyperparam_mutations=mutations, quantile_fraction=0.25
    )
