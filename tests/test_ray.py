"""The Ray runtime (Flower's simulation engine) runs the same app with the same results."""

from __future__ import annotations

import logging

import pytest

from fedlearn.experiment import simulate
from tests.conftest import TINY, metrics_without_timings


@pytest.mark.slow
def test_ray_runs_two_rounds_like_inprocess(tmp_path, caplog) -> None:
    no_workers = [o for o in TINY if not o.startswith("runtime.workers")]
    with caplog.at_level(logging.INFO):
        ray_result = simulate([*no_workers, "runtime=ray"], run_dir=tmp_path / "ray")
    assert ray_result["status"] == "completed" and ray_result["rounds_completed"] == 2
    # No set-up chatter: Flower's notice that run_simulation is deprecated, alembic's plugins.
    chatter = [r for r in caplog.records if "deprecated" in r.getMessage() or "alembic" in r.name]
    assert not chatter, chatter[0].getMessage()
    simulate([*TINY, "runtime.vectorize=false"], run_dir=tmp_path / "inproc")  # bit for bit
    ray_lines = metrics_without_timings(tmp_path / "ray")
    local_lines = metrics_without_timings(tmp_path / "inproc")
    # Ray's clients trained on the same carved data: the same models each round (losses
    # to float32 rounding: Ray's client processes may sum in another order).
    for ray_line, local_line in zip(ray_lines, local_lines, strict=True):
        for key in ("validation", "test"):
            assert ray_line[key]["accuracy"] == local_line[key]["accuracy"]
            assert ray_line[key]["loss"] == pytest.approx(local_line[key]["loss"], rel=1e-5)


def test_ray_resources_are_checked() -> None:
    from fedlearn.runtime.ray import backend_config

    with pytest.raises(ValueError, match="runtime.client_resources.num_cpus must be > 0"):
        backend_config({"client_resources": {"num_cpus": 0}})
    cfg = backend_config({"client_resources": {"num_cpus": 1, "num_gpus": 0.25}})
    assert cfg["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.25}


RUNS = ("split", "whole")


@pytest.mark.slow
def test_ray_resume_continues_with_every_clients_scaffold_state(tmp_path) -> None:
    # SCAFFOLD's client control variates live in Context.state; Flower's engine keeps
    # Contexts out of reach and renumbers nodes at every start, so the server carries
    # them (fedlearn.runtime.carry) and checkpoints them. Ray gives the in-process
    # runtime's results, so the uninterrupted reference runs in-process.
    ray = [o for o in TINY if not o.startswith("runtime.")] + ["runtime=ray", "strategy=scaffold"]
    whole = simulate([*TINY, "strategy=scaffold", "num_rounds=3"], tmp_path / "whole")
    simulate(ray, tmp_path / "split")  # rounds 1-2
    resumed = simulate([f"resume={tmp_path / 'split'}", "num_rounds=3"])
    assert resumed["rounds_completed"] == 3
    assert resumed["final"] == whole["final"]
    # (Ray returns replies in another order: only sums over clients differ, in the last bits.)
    central = [
        [(m["validation"], m["test"]) for m in metrics_without_timings(tmp_path / r)] for r in RUNS
    ]
    assert central[0] == central[1]
