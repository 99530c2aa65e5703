"""Action masks: found where the env keeps them (observation key, info, `action_masks()`), taken
by every actor (workers inline and on Ray, sync and async, with overlap and two learners,
evaluation, `predict`, the exported program) so an env that raises on an illegal action never
sees one; the same masked log-probs and entropy in acting and learning; bad masks in one line;
and a task masking makes easy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

import trainer
from tests.conftest import make_small_config
from trainer.core.config import EnvConfig
from trainer.core.env_making import make_env
from trainer.core.envs import probe_env, probe_run
from trainer.core.errors import UserError
from trainer.core.policy import build_policy
from trainer.evaluate import evaluate
from trainer.export import export_checkpoint

CHOICE = "tests.envs.masked:MaskedChoice"


def masked_env(source: str = "info", **kwargs) -> dict:
    return {"id": CHOICE, "kwargs": {"source": source, **kwargs}}


def train_recording_ratios(config, run_dir) -> tuple[dict, list[float]]:
    """Train; the summary, and each iteration's first-minibatch PPO ratio deviation."""
    ratios: list[float] = []
    record = [lambda report: ratios.append(report.scalars["losses/first_minibatch_ratio_dev"])]
    return trainer.train(config, run_dir=run_dir, callbacks=record), ratios


def masked_config(source: str = "info", kind: str = "mlp", env_kwargs: dict | None = None, **overrides):
    return make_small_config(
        env=masked_env(source, **(env_kwargs or {})),
        policy={"kind": kind},
        ppo={"total_steps": 256},
        logging={"tensorboard": False},
        checkpoint={"every": 1},
        **{"learner": {"precision": "fp32"}, **overrides},  # fp32: the first ratio is 1 within float noise
    )


@pytest.mark.parametrize("source", ["observation", "info", "method"])
def test_the_mask_is_found_where_the_env_keeps_it_and_is_a_leaf_the_network_never_sees(source):
    probe = probe_env(EnvConfig(**masked_env(source)))
    spec = probe.obs_spec
    assert spec.mask_source == source and spec.mask_key == "action_mask"
    assert [(leaf.key, leaf.kind) for leaf in spec.leaves][-1] == ("action_mask", "mask")
    assert [leaf.kind for leaf in spec.fed_leaves] == ["vector"]
    assert spec.describe()[-1] == {"key": "action_mask", "kind": "mask", "shape": [6], "dtype": "torch.bool",
                                   "source": source}  # fmt: skip
    off = probe_env(EnvConfig(**masked_env(source), action_mask=False)).obs_spec  # YAML's bare `off`
    assert off.mask_key is None and off.mask_source is None


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
@pytest.mark.parametrize("nvec", [(6,), (3, 4)], ids=["discrete", "multidiscrete"])
def test_masked_log_probs_and_entropy_are_the_same_in_acting_and_learning_and_illegal_actions_never_drawn(kind, nvec):
    config = masked_config("observation", kind, {"nvec": nvec, "legal": 2})
    probe = probe_run(config)
    policy = build_policy(probe.obs_spec, probe.action_space, config)
    B = 64
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(B, sum(nvec), dtype=torch.bool)
    offset = 0
    for n in nvec:  # two legal actions per part, at random
        for row in range(B):
            mask[row, offset + torch.randperm(n, generator=generator)[:2]] = True
        offset += n
    obs = {"obs": torch.rand(B, sum(nvec), generator=generator), "action_mask": mask}
    first = torch.ones(B, dtype=torch.bool)
    with torch.inference_mode():
        action, logprob, _, _ = policy.act(obs, policy.initial_hidden(B), first, generator=generator)
    parts = torch.split(mask, list(nvec), dim=-1)
    for part, column in zip(parts, action.unbind(-1), strict=True):
        assert part.gather(-1, column[:, None]).all()  # only legal actions drawn
    sequence = {key: x[None] for key, x in obs.items()}
    hidden = policy.initial_hidden(B).clone()  # as the buffer hands them to learning: ordinary tensors
    learned, entropy, _ = policy.evaluate_actions(sequence, action[None].clone(), hidden, first[None])
    torch.testing.assert_close(learned[0], logprob, atol=1e-6, rtol=0)
    # The entropy is the masked distribution's: over the legal actions alone.
    with torch.no_grad():
        params, _, _ = policy.step(obs, policy.initial_hidden(B), first)
    expected = 0.0
    for logits, part in zip(torch.split(params, list(nvec), dim=-1), parts, strict=True):
        legal = torch.distributions.Categorical(logits=logits.masked_fill(~part, float("-inf")))
        expected = expected + legal.entropy()
    torch.testing.assert_close(entropy[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("source", "kind", "extra"),
    [
        ("observation", "mlp", {}),
        ("info", "lstm", {}),
        ("info", "tests.envs.networks:GRUCore", {}),
        ("method", "mlp", {"workers": {"vector_env": "async"}}),
        ("info", "mlp", {"env_kwargs": {"nvec": (3, 4), "legal": 1}}),
        ("observation", "lstm", {"env_kwargs": {"image": True}}),
    ],
    ids=["observation-mlp", "info-lstm", "info-custom-core", "method-async", "multidiscrete", "image-lstm"],
)
def test_inline_training_never_sends_the_env_an_illegal_action(tmp_path, source, kind, extra):
    """The env raises on an illegal action: a run that finishes never sent one. Evaluation
    (during training and `trainer evaluate`) acts on it too, and stays on-policy (ratio 1)."""
    config = masked_config(source, kind, eval={"every": 1, "episodes": 2}, **extra)
    summary, ratios = train_recording_ratios(config, tmp_path / "run")
    assert summary["env_steps"] == 256
    assert len(ratios) == 4 and max(ratios) < 1e-5
    assert len(evaluate(tmp_path / "run", episodes=2, deterministic=False)["returns"]) == 2


def test_a_masked_run_resumes_masked_and_refuses_to_resume_unmasked(tmp_path):
    """The checkpoint records the mask and where it comes from: a resume that would drop it is
    refused in one line, before anything is written."""
    run = tmp_path / "run"
    trainer.train(masked_config("info", "lstm"), run_dir=run)
    summary = trainer.train(masked_config("info", "lstm"), run_dir=run, resume=run, overrides=["ppo.total_steps=512"])
    assert summary["env_steps"] == 512
    with pytest.raises(UserError) as caught:
        trainer.train(masked_config("info", "lstm"), run_dir=run, resume=run, overrides=["env.action_mask=off"])
    assert "action_mask: mask bool (6,) from info}" in str(caught.value) and "\n" not in str(caught.value)


def test_predict_and_the_exported_program_take_only_legal_actions(tmp_path):
    trainer.train(masked_config("info", "lstm"), run_dir=tmp_path / "run")
    checkpoint = trainer.load_policy(tmp_path / "run")
    program = trainer.load_policy(export_checkpoint(tmp_path / "run", tmp_path / "policy.pt2"))
    env = make_env(EnvConfig(**masked_env("info")))  # strict: raises on an illegal action
    for policy in (checkpoint, program):
        obs, info = env.reset(seed=1)
        state, start, steps = None, True, 0
        while steps < 60:
            action, state = policy.predict(obs, state, episode_start=np.array([start]), action_mask=info["action_mask"])
            obs, _, terminated, truncated, info = env.step(action)
            start, steps = terminated or truncated, steps + 1
            if start:
                obs, info = env.reset()
    batch = np.zeros((2, 6), dtype=np.float32)
    masks = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]])
    assert checkpoint.predict(batch, action_mask=masks)[0].tolist() == [0, 5]
    assert program.predict(batch, action_mask=masks)[0].tolist() == [0, 5]
    with pytest.raises(UserError, match=r"^predict: this policy takes only legal actions, .* in info\['action_mask'\]"):
        checkpoint.predict(batch)
    with pytest.raises(UserError, match=r"^predict: the action mask allows no action \(row 1 of the batch\)"):
        checkpoint.predict(batch, action_mask=np.array([[1, 0, 0, 0, 0, 0], [0] * 6]))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (masked_env("info", mask_size=4), r"^env 'tests\.envs\.masked:MaskedChoice': its action mask \(info\['action_mask'\]\) has shape \(4,\), but action space Discrete\(6\) needs 6 entries"),  # noqa: E501
        (masked_env("observation", mask_size=5), r"its action mask \(the observation's key 'action_mask'\) has shape \(5,\)"),  # noqa: E501
        ({**masked_env("info"), "action_mask": "method"}, r"^env\.action_mask is 'method' but env .* has no action_masks\(\) method; set env\.action_mask: auto"),  # noqa: E501
        ({"id": "CartPole-v1", "action_mask": "info"}, r"^env\.action_mask is 'info' but env 'CartPole-v1' has no 'action_mask' in the info of a reset"),  # noqa: E501
    ],
    ids=["info-size", "observation-size", "no-method", "no-info"],
)  # fmt: skip
def test_a_mask_that_does_not_fit_is_one_line_at_start(env, message):
    with pytest.raises(UserError, match=message) as caught:
        probe_env(EnvConfig(**env))
    assert "\n" not in str(caught.value)


def test_a_mask_that_allows_no_action_stops_the_run_naming_env_worker_and_step(tmp_path):
    config = masked_config("info", env_kwargs={"empty_at_step": 5})
    with pytest.raises(UserError) as caught:
        trainer.train(config, run_dir=tmp_path / "run")
    assert str(caught.value).startswith(
        "env 'tests.envs.masked:MaskedChoice' gave an action mask that allows no action (worker 0, env step 8)"
    ), caught.value


def test_masks_on_actions_that_cannot_be_masked_are_one_line():
    from tests.envs.masked import MaskedChoice

    class ContinuousMasked(MaskedChoice):
        def __init__(self) -> None:
            super().__init__("info")
            self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    import gymnasium as gym

    gym.register("tests/ContinuousMasked-v0", entry_point=ContinuousMasked)
    with pytest.raises(UserError, match=r"gives action masks \(info\['action_mask'\]\) but its action space Box"):
        probe_env(EnvConfig(id="tests/ContinuousMasked-v0"))


@pytest.mark.ray
@pytest.mark.parametrize(
    ("source", "kind", "workers"),
    [("info", "lstm", {"overlap": True}), ("method", "mlp", {"vector_env": "async"})],
    ids=["lstm-overlap", "async"],
)
def test_ray_workers_and_two_learners_never_send_an_illegal_action(local_ray, tmp_path, source, kind, workers):
    """On Ray: two data-parallel learners, with workers collecting during updates (LSTM) or
    stepping their envs in subprocesses; on-policy iterations keep the first ratio at 1."""
    config = masked_config(
        source, kind, execution="ray", learner={"num_learners": 2, "precision": "fp32"}, workers=workers
    )
    summary, ratios = train_recording_ratios(config, tmp_path / "run")
    assert summary["env_steps"] == 256
    if not workers.get("overlap"):
        assert max(ratios) < 1e-5


@pytest.mark.learning
def test_masking_is_what_makes_a_task_solvable_in_a_small_budget(tmp_path):
    """Half the time the action the observation points to is illegal, and taking it ends the
    episode: only the info mask says when. Masked, PPO learns to take it whenever it is legal
    (return ~10 of 20; a random masked policy gets ~3.3); unmasked, it stays near 0."""
    env = {"source": "info", "strict": False, "good_always_legal": False}

    def run(mask: str) -> dict:
        config = make_small_config(
            env={**masked_env(**env), "action_mask": mask},
            policy={"hidden_sizes": [32]},
            ppo={"total_steps": 8192, "rollout_steps": 32, "lr": 3e-3, "num_minibatches": 4, "update_epochs": 4,
                 "ent_coef": 0.0},
            workers={"num_workers": 2, "envs_per_worker": 4},
            logging={"tensorboard": False},
        )  # fmt: skip
        solved = [lambda report: report.scalars.get("charts/mean_return_last20", 0.0) >= 8]
        return trainer.train(config, run_dir=tmp_path / mask, callbacks=solved)

    masked, unmasked = run("auto"), run("off")
    assert masked["mean_return_last20"] >= 8 and masked["env_steps"] <= 8192
    assert unmasked["env_steps"] == 8192 and unmasked["mean_return_last20"] < 3
