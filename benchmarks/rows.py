"""What the benchmark can run: the row names and groups, what each row sets up, and the step
counts of a full and a smoke run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"mlp": "configs/cartpole.yaml", "lstm": "configs/cartpole_masked_lstm.yaml"}
ENV_IDS = {"mlp": "CartPole-v1", "lstm": "MaskedVelocityCartPole-v1"}
ENVS_PER_WORKER = 32
SOLVE_CONFIG = "configs/cartpole.yaml"
SOLVE_THRESHOLD = 475.0


@dataclass(frozen=True)
class Params:
    limit_steps: int  # vector steps per limit process
    warmup_iterations: int
    measured_steps: dict  # policy -> env steps measured per row (fixed across rows)
    memory_probes: tuple[int, int]
    solve_seeds: tuple[int, ...]
    solve_overrides: tuple[str, ...]
    sb3_warmup: int
    sb3_iterations: dict  # policy -> measured rollouts
    sb3_solve_max_steps: int
    idle_wait_s: float  # before each row, wait up to this long for other processes to go quiet


FULL = Params(
    limit_steps=4000,
    warmup_iterations=3,
    measured_steps={"mlp": 40 * 8192, "lstm": 20 * 8192},
    memory_probes=(20, 200),
    solve_seeds=(1, 2, 3),
    solve_overrides=(),
    sb3_warmup=1,
    sb3_iterations={"mlp": 8, "lstm": 3},
    sb3_solve_max_steps=100_000,
    idle_wait_s=60.0,
)
SMOKE = Params(
    limit_steps=500,
    warmup_iterations=1,
    measured_steps={"mlp": 2 * 8192, "lstm": 8192},
    memory_probes=(2, 4),
    solve_seeds=(1,),
    solve_overrides=("ppo.total_steps=2048",),
    sb3_warmup=1,
    sb3_iterations={"mlp": 1, "lstm": 1},
    sb3_solve_max_steps=2048,
    idle_wait_s=0.0,
)

# name -> (execution, num_workers, policy, overlap); `ray2o`: workers.overlap on (one version of lag)
OURS = {
    f"{mode}-{policy}": (
        ("inline" if mode == "inline" else "ray"),
        (1 if mode == "ray1" else 2),
        policy,
        mode == "ray2o",
    )
    for policy in ("mlp", "lstm")
    for mode in ("inline", "ray1", "ray2", "ray2o")
}
SOLVE_ROWS = {"solve-inline": "inline", "solve-ray": "ray"}
SB3_ROWS = {f"sb3-{policy}-{n}": (policy, n) for policy in ("mlp", "lstm") for n in (64, 32)}
BREAKDOWN_SOURCE = "ray2-mlp"  # the row whose iterations the breakdown row splits into phases


def limit_name(name: str) -> str:
    """The limit row that row `name` of ours is compared with."""
    execution, workers, policy, _ = OURS[name]
    setup = "inline" if execution == "inline" else f"{workers}proc"
    return f"limit-{policy}-{setup}"


def limit_spec(name: str) -> tuple[str, int, int, int]:
    """(env id, processes, vector envs per process, envs each) of a limit row."""
    _, policy, setup = name.split("-")
    if setup == "inline":  # inline: all workers' envs stepped in turn in one process
        return ENV_IDS[policy], 1, 2, ENVS_PER_WORKER
    return ENV_IDS[policy], int(setup.removesuffix("proc")), 1, ENVS_PER_WORKER


LIMIT_ROWS = sorted({limit_name(name) for name in OURS})
ALL_ROWS = [*LIMIT_ROWS, *OURS, *SOLVE_ROWS, "memory", "breakdown", *SB3_ROWS, "sb3-solve"]
GROUPS = {
    "ours": list(OURS),
    "solve": [*SOLVE_ROWS],
    "peers": [*SB3_ROWS, "sb3-solve"],
    "memory": ["memory"],
    "breakdown": ["breakdown"],
    "limit": LIMIT_ROWS,
}
