"""The Runtime interface: built by ``_target_``, described by attributes, never by name."""

from __future__ import annotations

import pytest

from fedlearn import checks
from fedlearn.experiment import _plain, build_runtime, compose_config, simulate
from fedlearn.runtime.inprocess import InProcessRuntime
from tests.conftest import TINY


class ForgetfulRuntime(InProcessRuntime):
    """The in-process runtime, declaring that it cannot restore client state."""

    client_state = "none"


FORGETFUL = [*TINY, f"runtime._target_={__name__}.ForgetfulRuntime"]


@pytest.mark.parametrize("name", checks.choices("runtime"))
def test_each_runtime_gets_only_its_own_settings(name: str, monkeypatch) -> None:
    from hydra.utils import get_class

    seen = {}
    cfg = _plain(compose_config([f"runtime={name}"]))
    cls = get_class(cfg["runtime"]["_target_"])
    monkeypatch.setattr(cls, "__init__", lambda self, **kw: seen.update(kw))
    build_runtime(cfg)
    assert set(seen) == set(cfg["runtime"]) - {"_target_"}


def test_resume_is_refused_where_client_state_would_be_lost(tmp_path) -> None:
    simulate([*FORGETFUL, "strategy=scaffold"], tmp_path / "scaffold")
    with pytest.raises(checks.ConfigError, match="cannot restore client state") as err:
        simulate([f"resume={tmp_path / 'scaffold'}", "num_rounds=3"])
    assert "\n" not in str(err.value)
    # Clients without state (FedAvg's) resume on the same runtime.
    simulate(FORGETFUL, tmp_path / "fedavg")
    resumed = simulate([f"resume={tmp_path / 'fedavg'}", "num_rounds=3"])
    assert resumed["rounds_completed"] == 3


def test_a_target_that_is_not_a_runtime_is_one_line() -> None:
    cfg = _plain(compose_config(["runtime=inprocess"]))
    cfg["runtime"] = {"_target_": "collections.OrderedDict"}
    with pytest.raises(checks.ConfigError, match="is a OrderedDict, not a fedlearn.runtime.base"):
        build_runtime(cfg)


def test_where_clients_run_is_an_attribute() -> None:
    from fedlearn.runtime.ray import RayRuntime

    assert RayRuntime().clients_here and not RayRuntime(init_args={"address": "auto"}).clients_here
    assert InProcessRuntime(workers=1).clients_here
