"""The allow-list of dataset, model and partitioner ``_target_``s: config is data."""

from __future__ import annotations

import sys

import pytest

from fedlearn import targets
from fedlearn.data import digits as digits_module
from fedlearn.data import load_dataset
from fedlearn.experiment import simulate
from fedlearn.models import build_model
from tests.conftest import TINY


@pytest.fixture(autouse=True)
def own_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the installation's own list (nothing allowed by a user)."""
    monkeypatch.setenv(targets.ENV, "")  # (restored afterwards, whatever the test allows)


def tiny_digits(**kwargs):  # noqa: ANN003, ANN201 - a user's own loader, as plain as it gets
    """A user-written dataset loader (here: fedlearn's digits under another name)."""
    return digits_module.load(**kwargs)


def test_shipped_targets_are_those_of_the_config_groups() -> None:
    assert "fedlearn.data.digits.load" in targets.shipped("dataset")
    assert "fedlearn.models.cnn.CNN" in targets.shipped("model")
    assert "flwr_datasets.partitioner.IidPartitioner" in targets.shipped("partitioner")
    assert "fedlearn.models.cnn.CNN" not in targets.shipped("dataset")


def test_a_target_not_allowed_is_refused_before_it_is_imported(tmp_path, monkeypatch) -> None:
    (tmp_path / "evil_loader.py").write_text("raise SystemExit('imported!')\ndef load(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(targets.NotAllowed, match=r"^dataset._target_=evil_loader.load is not"):
        load_dataset({"_target_": "evil_loader.load"})
    assert "evil_loader" not in sys.modules
    marker = tmp_path / "marker"
    with pytest.raises(targets.NotAllowed, match="--allow-target"):
        load_dataset({"_target_": "pathlib.Path.touch", "self": str(marker)})
    with pytest.raises(targets.NotAllowed, match="model._target_=subprocess.Popen"):
        build_model({"_target_": "subprocess.Popen", "args": "true"}, None)  # type: ignore[arg-type]
    assert not marker.exists()


@pytest.mark.parametrize(
    "extra",
    [
        {"_partial_": True},
        {"_args_": "x"},
        {"_recursive_": False},
        {"_convert_": "all"},
        {"transform._target_": "os.system"},
        {"transform": {"_target_": "os.system"}},
        {"sizes": [1, 2]},
    ],
)
def test_instantiation_keys_and_nested_values_are_not_honoured(extra) -> None:
    key = next(iter(extra))
    with pytest.raises(targets.NotAllowed, match=rf"^dataset\.{key.split('.')[0]}"):
        load_dataset({"_target_": "fedlearn.data.digits.load", "max_samples": 40, **extra})


def test_the_client_owner_allows_more(monkeypatch) -> None:
    own = f"{__name__}.tiny_digits"
    with pytest.raises(targets.NotAllowed):
        targets.locate({"_target_": own}, "dataset")
    targets.allow([f"{__name__}:tiny_digits"])  # module:attr spelling, as --allow-target takes
    fn, kwargs = targets.locate({"_target_": own, "max_samples": 40, "seed": None}, "dataset")
    assert fn is tiny_digits and kwargs == {"max_samples": 40, "seed": None}
    assert own in targets.allowed("model")  # one list for every group: the owner's choice


def test_a_simulation_builds_what_its_own_config_names(tmp_path) -> None:
    # The simulating user is the clients' owner: their config's targets are allowed,
    # in worker processes too.
    own = f"dataset._target_={__name__}.tiny_digits"
    result = simulate([*TINY, own, "runtime.workers=2"], run_dir=tmp_path)
    assert result["status"] == "completed"
