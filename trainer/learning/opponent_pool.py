"""Self-play's pool: frozen past snapshots of the trained policy, with each one's results against
it. The learner keeps it (and checkpoints it); every snapshot it publishes carries the pool,
which the workers' frozen seats act with. A member's weights are copies taken when it was
added: nothing trains them.
"""

from __future__ import annotations

import torch

from trainer.core.config import SelfPlayConfig


class OpponentPool:
    def __init__(self, settings: SelfPlayConfig) -> None:
        self.settings = settings
        self.members: list[dict] = []  # {"id": the policy version it was, "weights", "results": [won, drawn, lost]}

    def add(self, version: int, weights: dict[str, torch.Tensor]) -> None:
        """A copy of the policy at `version` joins; past pool_size, the oldest leaves."""
        copy = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}
        self.members.append({"id": version, "weights": copy, "results": [0, 0, 0]})
        first = 1 if self.settings.keep_initial and self.settings.pool_size > 1 else 0
        while len(self.members) > self.settings.pool_size:
            del self.members[first]

    def record(self, outcomes: list[tuple[int, float]]) -> dict[str, float]:
        """Fold in the episodes' results (snapshot id, +1 / 0 / -1 for the trained side); the
        iteration's rates against the pool, and its size."""
        by_id = {member["id"]: member for member in self.members}
        counts = [0, 0, 0]
        for member_id, result in outcomes:
            index = 0 if result > 0 else 1 if result == 0 else 2
            counts[index] += 1
            if member_id in by_id:  # (one dropped from the pool since it played)
                by_id[member_id]["results"][index] += 1
        metrics = {"selfplay/pool_size": float(len(self.members)), "selfplay/games": float(sum(counts))}
        if sum(counts):
            for name, count in zip(("win_rate", "draw_rate", "loss_rate"), counts):
                metrics[f"selfplay/{name}"] = count / sum(counts)
        return metrics

    def probabilities(self) -> list[float]:
        """How likely each member is to play an episode, as `sample` says: `win_rate` weighs each
        by 1 - the trained policy's win rate against it (draws half; one won and one lost game
        assumed, so a new member is neither ignored nor favoured)."""
        if self.settings.sample == "latest":
            return [0.0] * (len(self.members) - 1) + [1.0]
        if self.settings.sample == "uniform":
            return [1.0 / len(self.members)] * len(self.members)
        weights = []
        for member in self.members:
            won, drawn, lost = member["results"]
            weights.append(1.0 - (won + 0.5 * drawn + 1.0) / (won + drawn + lost + 2.0) + 1e-3)
        return [weight / sum(weights) for weight in weights]

    def published(self) -> dict:
        """What the workers need: each member's id and weights, and the sampling probabilities."""
        return {
            "ids": [member["id"] for member in self.members],
            "weights": {member["id"]: member["weights"] for member in self.members},
            "probabilities": self.probabilities(),
        }

    def state_dict(self) -> list[dict]:
        return [{**member, "results": list(member["results"])} for member in self.members]

    def load_state_dict(self, members: list[dict]) -> None:
        self.members = [{**member, "results": list(member["results"])} for member in members]
