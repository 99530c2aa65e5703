"""The limit: the trainer's own vector env stepping pre-sampled random actions, nothing else.

One spawned process per core the trainer's workers get; each steps `vecs_per_proc` vector envs of
`envs` sub-envs in turn (the inline runtime steps its workers' envs one after the other in one
process). Actions are sampled before the clock starts, so only `env.step` is timed.
"""

from __future__ import annotations

import multiprocessing as mp
import time

WARMUP_STEPS = 100


def _step_loop(env, vecs_per_proc: int, envs: int, steps: int, seed: int, barrier, results) -> None:
    from trainer.core.config import EnvConfig
    from trainer.core.envs import make_vector_env

    config = env if isinstance(env, EnvConfig) else EnvConfig(id=env)
    vecs = [make_vector_env(config, envs) for _ in range(vecs_per_proc)]
    for i, vec in enumerate(vecs):
        vec.reset(seed=seed + i * envs)
        vec.action_space.seed(seed + i)
    actions = [[vec.action_space.sample() for _ in range(steps)] for vec in vecs]
    for vec, acts in zip(vecs, actions):
        for t in range(min(WARMUP_STEPS, steps)):
            vec.step(acts[t])
    barrier.wait()
    start = time.perf_counter()
    for t in range(steps):
        for vec, acts in zip(vecs, actions):
            vec.step(acts[t])
    end = time.perf_counter()
    for vec in vecs:
        vec.close()
    results.put((vecs_per_proc * envs * steps, start, end))


def measure_limit(env_id, procs: int, vecs_per_proc: int, envs: int, steps: int, seed: int = 0) -> dict:
    """Env steps/s of `procs` processes, each stepping `vecs_per_proc` x `envs` envs for `steps`
    vector steps: the sum of the per-process rates (and the aggregate over the common window).
    `env_id`: an id, or a whole EnvConfig (kwargs and wrappers included)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_step_loop, args=(env_id, vecs_per_proc, envs, steps, seed + 1000 * p, barrier, results))
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    parts = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    rates = [n / (end - start) for n, start, end in parts]
    total = sum(n for n, _, _ in parts)
    window = max(end for _, _, end in parts) - min(start for _, start, _ in parts)
    return {
        "env_id": getattr(env_id, "id", env_id),
        "processes": procs,
        "vector_envs_per_process": vecs_per_proc,
        "envs_per_vector_env": envs,
        "env_steps": total,
        "steps_per_s": sum(rates),
        "per_process_steps_per_s": rates,
        "aggregate_steps_per_s": total / window,
    }
