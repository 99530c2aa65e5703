"""Command line: `python -m trainer train CONFIG [--set key.path=value ...]`.

A UserError (bad config, unknown env, ...) prints one line and exits with its code; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from trainer.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainer", description="Distributed PPO with Ray rollout workers.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy from a YAML config")
    train.add_argument("config", help="path to a YAML config, e.g. configs/cartpole.yaml")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set ppo.lr=1e-3 (repeatable)",
    )  # fmt: skip
    train.add_argument("--run-dir", help="write the run here (default: a new directory under logging.dir)")
    train.add_argument("--run-name", help="name of the run directory under logging.dir")
    train.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else an embedded local Ray)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from trainer.driver import train

            train(args.config, args.overrides, run_dir=args.run_dir, run_name=args.run_name, address=args.address)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
