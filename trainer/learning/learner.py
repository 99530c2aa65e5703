"""The learner: owns the policy, optimizer, normalizers and buffer; publishes snapshots,
takes rollouts in, runs the PPO epochs. A plain class, so a Ray actor can wrap it unchanged.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from trainer.core.config import Config
from trainer.core.envs import Probe
from trainer.core.errors import UserError
from trainer.core.messages import PolicySnapshot, Rollout, check_rollout
from trainer.core.normalization import MomentStats, RunningMeanStd
from trainer.core.policy import build_policy
from trainer.core.seeding import derive_seed
from trainer.core.timing import PhaseTimer
from trainer.learning.buffer import RolloutBuffer
from trainer.learning.distributed import Collective, LocalCollective, ProcessGroup
from trainer.learning.ppo import LossTerms, ppo_loss
from trainer.learning.precision import autocast, use_bf16


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"learner.device is {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


class Learner:
    """One learner, or rank `rank` of `world` data-parallel ones (see `join`): a rank holds the
    buffer of workers [rank * W / world, (rank + 1) * W / world) and computes, with the others,
    what one learner computes on the whole buffer. `max_policy_lag`: how many versions older than
    the learner a rollout may be (the runtime's choice: 1 where it collects during updates)."""

    def __init__(
        self,
        config: Config,
        probe: Probe,
        rank: int = 0,
        world: int = 1,
        max_policy_lag: int = 0,
    ) -> None:
        self.config = config
        self.rank, self.world = rank, world
        self.num_workers = config.workers.num_workers // world  # this rank's workers
        self.first_env = rank * config.total_envs // world
        self.collective: Collective = LocalCollective()  # a ProcessGroup once `join`ed
        self.device = resolve_device(config.learner.device)
        self.obs_spec = probe.obs_spec
        self.policy = build_policy(self.obs_spec, probe.action_space, config).to(self.device)
        # One fused kernel on a GPU; on a CPU, foreach (multi-tensor) ops beat the per-tensor loop.
        implementation = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=config.ppo.lr, eps=config.ppo.adam_eps, **implementation
        )
        self.bf16 = use_bf16(config.learner.precision, self.device, self.policy)
        self.precision = autocast(self.bf16, self.device)  # the context each minibatch's features run in
        self.obs_rms = {leaf.key: RunningMeanStd(leaf.shape) for leaf in self.obs_spec.vector_leaves}
        self.return_rms = RunningMeanStd(())
        self.buffer = RolloutBuffer(
            probe.rollout_spec,
            num_envs=config.total_envs // world,
            envs_per_worker=config.workers.envs_per_worker,
            device=self.device,
        )
        self._expected = self.buffer.expected_shapes()
        self.max_policy_lag = max_policy_lag
        self._shuffle = torch.Generator().manual_seed(derive_seed(config.seed, "minibatches"))
        self.version = 0
        self.iteration = 0
        self.env_steps = 0  # learned from, over the whole run (resumes included): what anneal_lr follows
        self._received: dict[int, tuple[dict[str, MomentStats], MomentStats]] = {}
        self.timer = PhaseTimer()

    def join(self, address: str, port: int) -> None:
        """Enter the learners' process group (every rank calls this at once; rank 0 listens). A
        rank in the group already stays in it: a start retried after a rebuild asks again."""
        if isinstance(self.collective, ProcessGroup):
            return
        timeout_s = self.config.learner.collective_timeout_s
        self.collective = ProcessGroup(self.rank, self.world, address, port, self.device, timeout_s)

    def close(self) -> None:
        """Leave the learners' process group, where this rank ends (one learner has none)."""
        self.collective.close()
        self.collective = LocalCollective()

    def snapshot(self) -> PolicySnapshot:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.policy.state_dict().items()}
        return PolicySnapshot(self.version, weights)

    def state_dict(self) -> dict:
        """Everything a resume needs to continue this learner exactly, as plain CPU data."""
        return {**self.weights_state(), "optimizer": self.optimizer_state()}

    def optimizer_state(self) -> dict:
        return _to_cpu(self.optimizer.state_dict())

    def weights_state(self) -> dict:
        """The state without the optimizer's (a third of it): what acting and evaluation need
        (the policy, its normalizer stats inside), with the counters and the normalizers."""
        return {
            "policy": {k: v.detach().cpu() for k, v in self.policy.state_dict().items()},
            "obs_rms": {key: rms.state_dict() for key, rms in self.obs_rms.items()},
            "return_rms": self.return_rms.state_dict(),
            "version": self.version,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "shuffle_rng": self._shuffle.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if "optimizer" in state:  # absent when it was lost with a learner's node
            self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the config's, not the checkpoint's: a resume may change them
            group["lr"], group["eps"] = self.config.ppo.lr, self.config.ppo.adam_eps
        for key, rms in self.obs_rms.items():
            rms.load_state_dict(state["obs_rms"][key])
        self.policy.preprocess.freeze(self.obs_rms)
        self.return_rms.load_state_dict(state["return_rms"])
        self.version = state["version"]
        self.iteration = state["iteration"]
        self.env_steps = state["env_steps"]
        self._shuffle.set_state(state["shuffle_rng"])

    def receive(self, slot: int, rollout: Rollout) -> None:
        """Check a worker's rollout and copy it into its slice of the buffer."""
        check_rollout(rollout, self.version, self._expected, self.max_policy_lag)
        self.buffer.store(slot, rollout)
        self._received[slot] = (rollout.obs_delta, rollout.return_delta)

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One iteration's learner side: this rank's workers' rollouts in slot order into the
        buffer, then the PPO epochs, the normalizers' merge and the next policy version. Returns
        its scalars by TensorBoard tag, phase times included."""
        with self.timer.phase("copy"):
            for slot, rollout in enumerate(rollouts):
                self.receive(slot, rollout)
        missing = set(range(self.num_workers)) - set(self._received)
        if missing:
            raise RuntimeError(f"update() before rollouts from workers {sorted(missing)} arrived")
        with self.timer.phase("learn"):
            metrics = self._optimize()
        return metrics | self.timer.take()

    def _optimize(self) -> dict[str, float]:
        ppo = self.config.ppo
        if ppo.anneal_lr:
            fraction = 1.0 - self.env_steps / self.config.ppo.total_steps
            for group in self.optimizer.param_groups:
                group["lr"] = fraction * ppo.lr
        reward = self.return_rms.scale(self.buffer.reward, ppo.reward_clip) if ppo.normalize_rewards else None
        self.buffer.compute_advantages(ppo.gamma, ppo.gae_lambda, reward, ppo.bootstrap_truncated)

        metrics, stopped_early = self._run_epochs()
        metrics["losses/explained_variance"] = explained_variance(
            self.buffer.value, self.buffer.ret, self.collective, self.buffer.tensors.get("valid")
        )
        metrics["losses/stopped_early"] = float(stopped_early)
        metrics["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        self._merge_deltas()
        metrics.update(self._normalizer_summary())
        if self.device.type == "cuda":
            metrics["perf/learner_gpu_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.version += 1
        self.iteration += 1
        self.env_steps += self.config.steps_per_iteration
        return metrics

    def _run_epochs(self) -> tuple[dict[str, float], bool]:
        """The PPO epochs over shuffled minibatches. Diagnostics stay on the device until the
        end, so a CUDA learner synchronizes once per update, not once per minibatch."""
        ppo = self.config.ppo
        names = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm")
        tags = ("total", "policy", "value", "entropy", "approx_kl", "clip_fraction", "grad_norm")
        sums = torch.zeros(len(names), device=self.device)
        first_ratio_dev = None
        count = 0
        shard = (self.first_env, self.config.total_envs)
        params = list(self.policy.parameters())
        for _ in range(ppo.update_epochs):
            for batch in self.buffer.minibatches(ppo.num_minibatches, self._shuffle, shard):
                terms = self._loss(batch)
                if first_ratio_dev is None:
                    first_ratio_dev = self.collective.max(terms.ratio_max_dev.reshape(1).clone())
                self.optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                values = torch.stack([getattr(terms, name).detach().to(sums.dtype) for name in names[:-1]])
                # perf/allreduce_s, with several learners: the collective's share of learn_s
                with self.timer.phase("allreduce") if self.world > 1 else nullcontext():
                    values = self.collective.sum_gradients(params, values)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
                self.optimizer.step()
                sums += torch.cat([values, grad_norm.detach().to(sums.dtype).reshape(1)])
                count += 1
            if ppo.target_kl is not None and values[names.index("approx_kl")].item() > ppo.target_kl:
                break
        stopped_early = count < ppo.update_epochs * ppo.num_minibatches
        metrics = {f"losses/{tag}": value for tag, value in zip(tags, (sums / count).tolist())}
        metrics["losses/first_minibatch_ratio_dev"] = first_ratio_dev.item()
        metrics["perf/learner_bf16"] = float(self.bf16)
        return metrics, stopped_early

    def _loss(self, batch) -> LossTerms:
        """The minibatch's loss terms (this rank's part of them, with several learners; a part
        may hold no sequence, and then gives zero terms and zero gradients)."""
        if batch.first.shape[1] == 0:
            zero = sum((p * 0).sum() for p in self.policy.parameters())
            return LossTerms(zero, *(zero.detach() for _ in range(6)))
        logprob, entropy, value = self.policy.evaluate_actions(
            batch.obs, batch.actions, batch.hidden, batch.first, self.precision
        )
        return ppo_loss(batch, logprob, entropy, value, self.config.ppo, self.collective)

    def _normalizer_summary(self) -> dict[str, float]:
        summary = {"normalizer/return_std": self.return_rms.var.sqrt().item()}
        if self.obs_rms:
            means = torch.cat([rms.mean.flatten() for rms in self.obs_rms.values()])
            std = torch.cat([rms.var.sqrt().flatten() for rms in self.obs_rms.values()])
            summary |= {
                "normalizer/obs_count": next(iter(self.obs_rms.values())).count,
                "normalizer/obs_mean_avg": means.mean().item(),
                "normalizer/obs_std_mean": std.mean().item(),
                "normalizer/obs_std_min": std.min().item(),
                "normalizer/obs_std_max": std.max().item(),
            }
        return summary

    def _merge_deltas(self) -> None:
        # Every worker's delta (all ranks' workers, gathered), merged in slot order: the stats do
        # not depend on arrival order, and every rank ends with the same ones.
        first_slot = self.rank * self.num_workers
        received = [(first_slot + slot, *self._received[slot]) for slot in sorted(self._received)]
        received = sorted(item for part in self.collective.gather(received) for item in part)
        for _, obs_delta, return_delta in received:
            for key, rms in self.obs_rms.items():
                rms.merge(obs_delta[key])
            self.return_rms.merge(return_delta)
        self._received.clear()
        self.policy.preprocess.freeze(self.obs_rms)


def explained_variance(
    predicted: torch.Tensor, target: torch.Tensor, collective: Collective, valid: torch.Tensor | None = None
) -> float:
    """1 - Var(target - predicted) / Var(target) over every rank's buffer (its `valid` samples,
    where some are padding): 1 is perfect, 0 is no better than the mean."""
    if valid is not None:
        predicted, target = predicted[valid], target[valid]
    residual, target = (target - predicted).double(), target.double()
    moments = torch.stack([torch.tensor(float(target.numel()), dtype=torch.float64, device=target.device),
                           target.sum(), (target**2).sum(), residual.sum(), (residual**2).sum()])  # fmt: skip
    n, t1, t2, r1, r2 = collective.sum(moments).tolist()
    if n < 2:
        return float("nan")
    var = (t2 - t1 * t1 / n) / (n - 1)
    return float("nan") if var <= 0 else 1.0 - ((r2 - r1 * r1 / n) / (n - 1)) / var


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
