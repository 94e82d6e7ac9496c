"""Tuning draws shared across strategies: the same client lr at trial k in every study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from fedlearn.compare.plan import parse
from fedlearn.compare.samplers import SharedRandomSampler, SharedTPESampler

LR = optuna.distributions.LogUniformDistribution(1e-3, 3.0)
ETA = optuna.distributions.LogUniformDistribution(1e-3, 1.0)


def _draws(sampler: optuna.samplers.BaseSampler, names: list[str], n: int = 6) -> list[dict]:
    """The values of ``n`` trials of a study that tunes ``names``, in that order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    out = []
    for _ in range(n):
        trial = study.ask({k: {"lr": LR, "eta": ETA}[k] for k in names})
        out.append(dict(trial.params))
        study.tell(trial, trial.params["lr"])
    return out


@pytest.mark.parametrize("make", [SharedRandomSampler, SharedTPESampler])
def test_a_setting_gets_the_same_draws_whatever_else_a_study_tunes(make) -> None:  # noqa: ANN001
    alone = _draws(make(seed=1000), ["lr"])
    with_eta = _draws(make(seed=1000), ["lr", "eta"])
    eta_first = _draws(make(seed=1000), ["eta", "lr"])
    assert [d["lr"] for d in alone] == [d["lr"] for d in with_eta] == [d["lr"] for d in eta_first]
    assert [d["eta"] for d in with_eta] == [d["eta"] for d in eta_first]
    assert len({d["lr"] for d in alone}) == 6  # a new draw every trial
    assert [d["lr"] for d in _draws(make(seed=1001), ["lr"])] != [d["lr"] for d in alone]


def test_optunas_own_sampler_does_not_share_draws() -> None:
    # What the shared samplers fix: one stream per study gives a second setting's study
    # other client learning rates.
    alone = _draws(optuna.samplers.RandomSampler(seed=1000), ["lr"])
    with_eta = _draws(optuna.samplers.RandomSampler(seed=1000), ["lr", "eta"])
    assert [d["lr"] for d in alone] != [d["lr"] for d in with_eta]


def test_a_sweep_tuned_from_one_stream_is_not_resumed_with_shared_draws(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    args = ["strategy=fedavg", "seed=0", "compare.tune=2", f"hydra.sweep.dir={root}"]
    parse(args).save({})
    plan = json.loads((root / "plan.json").read_text())
    assert plan["options"]["draws"] == "shared"
    parse(args).save({})  # the same sweep resumes
    del plan["options"]["draws"]  # as an earlier fedlearn wrote it
    (root / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match=r"drew their values from one stream.*another folder$"):
        parse(args).save({})
