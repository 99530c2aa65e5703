"""The benchmark's smoke run: every row comes out, with positive finite steps/s and ratios that
are what they claim to be (ours / limit, ours / SB3)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks.benchmark import ALL_ROWS, LIMIT_ROWS, OURS, SB3_ROWS, limit_name
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.ray

PEER_ROWS = {*SB3_ROWS, "sb3-solve"}


def positive_finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def run_smoke(module: str, out) -> subprocess.CompletedProcess:
    """`python -m MODULE --smoke --json OUT`, which must succeed."""
    command = [sys.executable, "-m", module, "--smoke", "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = run_smoke("benchmarks.benchmark", out)
    data = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data


def test_every_row_has_positive_finite_steps_per_s(smoke):
    rows, skipped = smoke["rows"], smoke["skipped"]
    for name in ALL_ROWS:
        if name in PEER_ROWS and name in skipped:
            assert "not installed" in skipped[name]
            continue
        assert name in rows, f"row {name} missing (skipped: {skipped.get(name)})"
        assert positive_finite(rows[name]["steps_per_s"]), (name, rows[name]["steps_per_s"])
    assert not set(skipped) - PEER_ROWS


def test_ratios_are_ours_over_reference(smoke):
    rows = smoke["rows"]
    for name in OURS:
        row = rows[name]
        limit = rows[limit_name(name)]
        assert row["limit_row"] == limit_name(name) and limit_name(name) in LIMIT_ROWS
        assert row["limit_steps_per_s"] == limit["steps_per_s"]
        assert row["ratio_to_limit"] == pytest.approx(row["steps_per_s"] / limit["steps_per_s"], rel=1e-9)
        assert positive_finite(row["ratio_to_limit"])
        if row["sb3_steps_per_s"] is None:
            assert row["ratio_to_sb3"] is None and row["sb3_row"] in smoke["skipped"]
        else:
            sb3 = rows[row["sb3_row"]]
            assert sb3["total_envs"] == row["total_envs"] and sb3["policy"] == row["policy"]
            assert row["ratio_to_sb3"] == pytest.approx(row["steps_per_s"] / sb3["steps_per_s"], rel=1e-9)


def test_limit_sums_its_processes(smoke):
    for name in LIMIT_ROWS:
        row = smoke["rows"][name]
        assert len(row["per_process_steps_per_s"]) == row["processes"]
        assert row["steps_per_s"] == pytest.approx(sum(row["per_process_steps_per_s"]), rel=1e-9)


def test_memory_breakdown_and_solve_rows_are_complete(smoke):
    rows = smoke["rows"]
    names = {p["process"] for p in rows["memory"]["processes"]}
    assert {"driver", "rollout worker 0", "rollout worker 1", "learner"} <= names
    for process in rows["memory"]["processes"]:
        for reading in (process["at_first"], process["at_last"]):
            assert positive_finite(reading["rss_mib"]) or process["process"].startswith("ray system")
    phases = {p["phase"].split(" (")[0]: p for p in rows["breakdown"]["phases"]}
    for phase in ("collect", "env stepping", "policy forward", "transfer", "buffer copy", "learner update"):
        assert phases[phase]["seconds"] >= 0, phase
    assert phases["iteration"]["share"] == pytest.approx(1.0)
    for name in ("solve-inline", "solve-ray"):
        assert rows[name]["runs"] and all(r["run_wall_s"] > 0 for r in rows[name]["runs"])
    assert "Throughput" in smoke["stdout"] and "Breakdown" in smoke["stdout"]


def test_atari_benchmark_smoke_reports_every_row(tmp_path) -> None:
    """benchmarks/atari.py: the limit, our three runtimes and SB3 (or why it is missing) come out
    with positive rates, and the printed ratios are ours / limit and ours / SB3."""
    out = tmp_path / "atari.json"
    proc = run_smoke("benchmarks.atari", out)
    data = json.loads(out.read_text())
    assert set(data["ours"]) == {"inline", "ray2", "ray2o"}
    limit, sb3 = data["limit"]["steps_per_s"], data["sb3"].get("steps_per_s")
    assert positive_finite(limit)
    if sb3 is None:
        assert "stable-baselines3 not installed" in data["sb3"]["skipped"]
    else:
        assert positive_finite(sb3)
    for row in data["ours"].values():
        assert positive_finite(row["steps_per_s"]) and all(positive_finite(v) for v in row["peak_rss_mb"].values())
        vs_sb3 = f"{row['steps_per_s'] / sb3:.2f}x" if sb3 else ""
        assert f"| {row['steps_per_s'] / limit:.1%} | {vs_sb3} |" in proc.stdout
    assert len(data["ours"]["ray2"]["peak_rss_mb"]) == 4  # driver, learner, two workers


def test_work_floor_smoke_gives_the_terms_and_a_floor_they_add_up_to(tmp_path) -> None:
    """benchmarks/work_floor.py: positive CPU terms per env step, floor = cores / their sum, and
    the rest of the achieved rate's CPU is `other_us`."""
    out = tmp_path / "floor.json"
    command = [sys.executable, "-m", "benchmarks.work_floor", "--smoke", "--rows", "mlp", "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    row = json.loads(out.read_text())["rows"]["mlp"]
    terms = [row["env_us"], row["act_us"], row["update_us"]]
    assert all(positive_finite(term) for term in terms)
    assert row["floor_steps_per_s"] == pytest.approx(row["cores"] / sum(terms) * 1e6)
    assert positive_finite(row["achieved_steps_per_s"])
    assert row["achieved_to_floor"] == pytest.approx(sum(terms) / (sum(terms) + row["other_us"]))
    assert f"{row['floor_steps_per_s']:,.0f}" in proc.stdout
