"""Sample Factory 2.1.1 on Atari Breakout, the work floor's third column for its Atari row.

Sample Factory needs gymnasium 0.29, so it runs from a venv of its own, named by the python
it gives (`--sample-factory /path/to/venv/bin/python`); set one up with
`pip install torch==2.13.0` then `pip install sample-factory==2.1.1 gymnasium==0.29.1 ale-py==0.9.1`,
where gymnasium must also see ale-py's ids in Sample Factory's worker processes (a
`gymnasium.envs` entry point that imports ale_py does it). Its Atari example with the row's
envs, rollout, minibatch and epochs (it runs synchronous PPO with these defaults). Throughput is
the FPS it prints at the end (frames collected over its training time, start-up left out; its
periodic reports count frames in whole iterations and would quantize it), in agent steps:
frames / its frame skip of 4.
"""

from __future__ import annotations

import re
import tempfile

from benchmarks.processes import failed, run_subprocess

FRAME_SKIP = 4
FINAL_FPS = re.compile(r"Collected \{.*\}, FPS: ([0-9.]+)")


def sample_factory_command(python: str, train_dir: str, agent_steps: int) -> list[str]:
    return [
        python, "-m", "sf_examples.atari.train_atari", "--algo=APPO", "--env=atari_breakout", "--device=cpu",
        "--num_workers=2", "--num_envs_per_worker=8", "--rollout=128", "--batch_size=256",
        "--num_batches_per_epoch=8", "--num_epochs=4", f"--train_dir={train_dir}", "--experiment=bench",
        f"--train_for_env_steps={agent_steps * FRAME_SKIP}",
    ]  # fmt: skip


def run_sample_factory(python: str, agent_steps: int) -> float:
    """Agent steps/s of one Sample Factory Breakout run of `agent_steps`."""
    with tempfile.TemporaryDirectory() as train_dir:
        cmd = sample_factory_command(python, train_dir, agent_steps)
        code, lines, _ = run_subprocess(cmd, timeout_s=3600)
    fps = [float(match.group(1)) for _, line in lines if (match := FINAL_FPS.search(line))]
    if code != 0 or not fps:
        raise failed(cmd, code, lines, " (or it printed no final FPS)")
    return fps[-1] / FRAME_SKIP
