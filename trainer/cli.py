"""Command line: `python -m trainer train CONFIG [--set key.path=value ...]`.

A UserError (bad config, unknown env, ...) prints one line and exits with its code; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainer.core.errors import UserError
from trainer.sweep.run import SCHEDULERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainer", description="Distributed PPO with Ray rollout workers.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy from a YAML config")
    train.add_argument("config", nargs="?", help="path to a YAML config, e.g. configs/cartpole.yaml")
    train.add_argument(
        "--resume", metavar="RUN_DIR_OR_CHECKPOINT",
        help="continue a run from its newest checkpoint; 'auto' (with --run-dir): continue if it has one, else start",
    )  # fmt: skip
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set ppo.lr=1e-3 (repeatable)",
    )  # fmt: skip
    train.add_argument("--run-dir", help="write the run here (default: a new directory under logging.dir)")
    train.add_argument("--run-name", help="name of the run directory under logging.dir")
    train.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else an embedded local Ray)")
    tune = commands.add_parser("tune", help="sweep hyperparameters (or seeds) on Ray Tune, one training run per trial")
    tune.add_argument("config", help="the base config, e.g. configs/cartpole.yaml")
    tune.add_argument(
        "--space",
        required=True,
        help="YAML mapping config keys to samplers, e.g. ppo.lr: {loguniform: [1.0e-4, 3.0e-3]}",
    )
    tune.add_argument(
        "--trials", type=int, default=8, help="trials sampled from the space; each runs once per grid value (default 8)"
    )
    tune.add_argument(
        "--out", required=True, help="sweep directory: runs/ (one run per trial), results.csv, best_config.yaml"
    )
    tune.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="asha",
        help="fifo: every trial to its budget; asha: stop weak trials early (default); pbt: population based training",
    )
    tune.add_argument(
        "--metric", default="charts/episodic_return_mean", help="the TensorBoard scalar trials are judged by"
    )
    tune.add_argument("--mode", choices=("max", "min"), default="max")
    tune.add_argument(
        "--max-concurrent", type=int, help="trials at once (default: one; each asks its learner's and workers' CPUs)"
    )
    tune.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the base config (repeatable)",
    )
    tune.add_argument(
        "--grace-steps",
        type=int,
        help="asha: env steps before a trial can be stopped (default: a ninth of ppo.total_steps)",
    )
    tune.add_argument(
        "--perturbation-steps", type=int, help="pbt: env steps between exploits (default: an eighth of ppo.total_steps)"
    )
    tune.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else an embedded local Ray)")
    tune.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out: unfinished trials from their checkpoints"
    )
    evaluate = commands.add_parser("evaluate", help="run a checkpoint's (or exported .pt2) policy for some episodes")
    evaluate.add_argument("checkpoint", help="checkpoint file, run directory (its newest checkpoint) or exported .pt2")
    evaluate.add_argument("--episodes", type=int, help="episodes to run (default: the config's eval.episodes)")
    evaluate.add_argument(
        "--deterministic", action=argparse.BooleanOptionalAction,
        help="take the most likely action, or sample (--no-deterministic); default: the config's eval.deterministic",
    )  # fmt: skip
    evaluate.add_argument("--seed", type=int, help="env i starts from seed + i (default: the config's eval.seed)")
    evaluate.add_argument("--video", metavar="DIR", help="record the first episode as DIR/episode_0.mp4")
    evaluate.add_argument(
        "--opponent", metavar="random|CHECKPOINT[:POLICY]",
        help="multi-agent self-play: play the trained policy against this in the opponents' seats (eval.opponent)",
    )  # fmt: skip
    export = commands.add_parser("export", help="write a self-contained inference program (.pt2)")
    export.add_argument("checkpoint", help="checkpoint file or run directory")
    export.add_argument("out", help="output path, e.g. policy.pt2")
    export.add_argument("--policy", help="which policy of a multi-agent run (may be left out where it has one)")
    board = commands.add_parser("tensorboard", help="serve TensorBoard for a run directory (or a folder of runs)")
    board.add_argument("logdir", nargs="?", default="runs", help="run directory or parent of run directories")
    board.add_argument("--port", type=int, default=6006)
    board.add_argument("--host", default="localhost", help="address to listen on (default: this machine only)")
    return parser


def serve_tensorboard(logdir: str, port: int, host: str) -> None:
    """Replace this process with TensorBoard's own server."""
    if not Path(logdir).is_dir():
        raise UserError(f"no such run directory: {logdir}")
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", str(port), "--host", host]
    os.execv(sys.executable, argv)


def run_train(args: argparse.Namespace) -> None:
    """Train. Every check that needs no cluster (config, env, network, memory, run directory) runs
    before Ray starts, so a bad input fails in seconds."""
    from trainer.runtime.session import train

    try:
        train(
            args.config,
            args.overrides,
            run_dir=args.run_dir,
            run_name=args.run_name,
            address=args.address,
            resume=args.resume,
        )
    finally:
        if "trainer.runtime.ray_connect" in sys.modules:  # else this process started no Ray
            from trainer.runtime.ray_connect import disconnect

            disconnect()  # also when train() failed (or Ctrl-C came) before its runtime took Ray over


def run_tune(args: argparse.Namespace) -> None:
    from dataclasses import fields

    from trainer.sweep.run import SweepArgs, sweep

    values = {field.name: getattr(args, field.name) for field in fields(SweepArgs)}
    sweep(SweepArgs(**{**values, "overrides": tuple(args.overrides)}))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run_train(args)
        elif args.command == "tune":
            run_tune(args)
        elif args.command == "evaluate":
            from trainer.agent_evaluation import describe_agent_result
            from trainer.evaluate import evaluate

            result = evaluate(args.checkpoint, args.episodes, args.deterministic, args.video, args.seed, args.opponent)
            video = f", video {result['video']}" if "video" in result else ""
            if "agents" in result:
                print(describe_agent_result(result) + video)
                return 0
            print(
                f"{result['episodes']} episodes: return {result['mean_return']:.2f} +- {result['std_return']:.2f}, "
                f"length {result['mean_length']:.1f} +- {result['std_length']:.1f}{video}"
            )
        elif args.command == "export":
            from trainer.export import export_checkpoint

            print(f"exported {export_checkpoint(args.checkpoint, args.out, args.policy)}")
        elif args.command == "tensorboard":
            serve_tensorboard(args.logdir, args.port, args.host)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a Ctrl-C before the run's own handler is in place (start-up)
        print("interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Ray was already stopped above; skip the interpreter's teardown, which can crash while
        # a half-started Ray or torch import still has threads running.
        os._exit(130)
    return 0
