"""A sweep: the base config and search space checked, Ray Tune's Tuner built (scheduler, trial
resources, storage) and run or resumed, then results.csv and best_config.yaml written."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from trainer.core.config import Config, load_config
from trainer.core.errors import UserError
from trainer.sweep.space import Axis, load_space, trial_config
from trainer.sweep.tags import check_metric

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
    check_metric(args.metric, _edge_configs(base, axes))
    out = Path(args.out).resolve()
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be at least 1, got {args.max_concurrent}")
    _check_out(out, args.resume)

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
    try:
        (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the sweep directory --out {out}: {exc.strerror}") from None
    connect(config, args.address, cpus=concurrent * max(_trial_cpus(base, axes), 1.0))
    try:
        trial = tune.with_parameters(
            PPOTrial, base=base, axes=axes, space=args.space, runs_dir=str(out / RUNS_DIR), metric=args.metric
        )
        trainable = tune.with_resources(trial, resources=lambda values: trial_resources(base, values))
        param_space = {axis.key: axis.to_tune() for axis in axes}
        if args.resume:
            tuner = _restore(tune, out / TUNE_DIR, trainable, param_space, args.space)
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
    _check_outcome(rows, counts, best, args.metric, out / "results.csv")
    return {"out": str(out), "rows": rows, "best": best}


def _restore(tune, path: Path, trainable, param_space: dict, space: str):
    try:
        return tune.Tuner.restore(str(path), trainable, resume_unfinished=True, param_space=param_space)
    except ValueError as exc:
        if "Invalid `param_space`" not in str(exc):
            raise
        keys = str(exc).rpartition("Expected: ")[2].replace("/grid_search", "")
        raise UserError(
            f"--resume: {space} is not the search space the sweep in {path.parent} started with (its keys: {keys}); "
            "resume with that --space"
        ) from None


def _check_out(out: Path, resume: bool) -> None:
    """--out is a directory (or will be one), and holds a sweep exactly when --resume says so.
    A tune/ without Tune's experiment state is what a start that stopped before its first trial
    leaves: no sweep, so a new start goes ahead in it."""
    existing = next(path for path in (out, *out.parents) if path.exists())
    if not existing.is_dir():
        where = f"--out {out} is" if existing == out else f"--out {out}: {existing} is"
        raise UserError(f"{where} a file, not a directory; give a directory for the sweep's runs and results")
    holds_sweep = any((out / TUNE_DIR).glob("experiment_state-*.json"))
    if holds_sweep and not resume:
        raise UserError(f"{out} already holds a sweep; continue it with --resume, or pick another --out")
    if resume and not holds_sweep:
        raise UserError(f"{out} holds no sweep to resume (no trial state in {TUNE_DIR}/); start it without --resume")


def _check_outcome(rows: list, counts: dict, best, metric: str, results: Path) -> None:
    """A sweep that leaves nothing to use (no trial completed, or none reported the metric) is an
    error, named by its first failure."""
    if not counts["completed"]:
        failed = sorted((row for row in rows if row.status == "error"), key=lambda row: row.trial)
        first = f"; the first error, {failed[0].trial}: {failed[0].reason}" if failed else ""
        ended = [f"{counts['error']} failed"] + [f"{counts['stopped']} stopped early"] * bool(counts["stopped"])
        raise UserError(f"no trial completed ({', '.join(ended)}){first}; every trial's status and reason: {results}")
    if best is None:
        raise UserError(
            f"no trial reported {metric} in its run, so there is no best config: judge by another --metric, "
            f"or train longer (ppo.total_steps) for it to be reported; every trial: {results}"
        )


def _edge_configs(base: dict, axes: list[Axis]) -> list[Config]:
    """The base config and the config with each listed value, or each end of each range."""
    return [trial_config(base, {})] + [trial_config(base, {axis.key: value}) for axis in axes for value in axis.values]


def _trial_cpus(base: dict, axes: list[Axis]) -> float:
    """The most CPUs one trial's placement group asks, over every edge value of the space."""
    from trainer.runtime.placement import trial_bundles

    return max(sum(b.get("CPU", 0.0) for b in trial_bundles(config)) for config in _edge_configs(base, axes))


def _scheduler(args: SweepArgs, budget: int, iteration_steps: int, axes: list[Axis]):
    """FIFO runs every trial to its budget; ASHA stops the weak ones at rungs of env steps
    (grace, 3 x grace, ...); PBT replaces the bottom quarter's weights and hyperparameters with
    perturbed copies of the top quarter's every `perturbation_steps`."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    if args.scheduler == "fifo":
        return FIFOScheduler()
    if args.scheduler == "asha":
        grace = max(iteration_steps, budget // 9) if args.grace_steps is None else args.grace_steps
        if not 0 < grace <= budget:
            raise UserError(f"--grace-steps must be between 1 and the budget ppo.total_steps={budget}, got {grace}")
        return ASHAScheduler(time_attr="env_steps", max_t=budget, grace_period=grace, reduction_factor=3)
    interval = max(iteration_steps, budget // 8) if args.perturbation_steps is None else args.perturbation_steps
    if not 0 < interval <= budget:
        raise UserError(
            f"--perturbation-steps must be between 1 and the budget ppo.total_steps={budget}, got {interval}"
        )
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
