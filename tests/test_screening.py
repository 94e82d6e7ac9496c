"""Reply screening by hand: layouts, update norms, weights, the round's consistency."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedlearn.app.screening import ScreenPolicy, check_reply, inconsistent, update_norm
from fedlearn.app.tracking import TrackingGrid
from tests.strategy_helpers import reply, task_identity  # noqa: F401 - autouse fixture


def _model(**named) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in named.items()})


SENT = RecordDict(
    {
        "arrays": _model(w=np.zeros((2, 2), np.float32), n=np.array(3, np.int64)),
        "config": ConfigRecord({"lr": 0.1}),
    }
)
POLICY = ScreenPolicy(max_update_norm=5.0, weight_key="num-examples")


def _reply(arrays: ArrayRecord, examples: object = 10, **extra: ArrayRecord) -> RecordDict:
    metrics = MetricRecord({"train_loss": 1.0, "num-examples": examples})
    return RecordDict({"arrays": arrays, "metrics": metrics, **extra})


def _good(value: float = 1.0) -> ArrayRecord:
    return _model(w=np.full((2, 2), value, np.float32), n=np.array(4, np.int64))


def test_update_norm_is_the_l2_distance_of_the_floating_arrays() -> None:
    # ||[[1, 1], [1, 1]] - 0|| = 2; the int64 counter is not an update
    assert update_norm(_good(), SENT["arrays"]) == pytest.approx(2.0)
    big = _model(w=np.full((2, 2), 1e30, np.float32), n=np.array(3, np.int64))
    assert update_norm(big, SENT["arrays"]) == pytest.approx(2e30, rel=1e-6)  # no overflow


@pytest.mark.parametrize(
    ("arrays", "reason", "words"),
    [
        (_model(w=np.zeros((4,), np.float32), n=np.array(3)), "layout", "float32[4] where"),
        (_model(w=np.zeros((2, 2), np.float32)), "layout", "missing ['n']"),
        (
            _model(w=np.zeros((2, 2), np.float32), n=np.array(3), x=np.zeros(1)),
            "layout",
            "extra ['x']",
        ),
        (_model(w=np.zeros((2, 2), np.int8), n=np.array(3)), "layout", "int8[2, 2] where"),
        (_good(3.0), "norm", "update norm 6 exceeds max_update_norm=5"),
    ],
)
def test_a_reply_that_does_not_fit_the_model_sent_is_refused(arrays, reason, words) -> None:
    got = check_reply(_reply(arrays), SENT, POLICY, train=True)
    assert got is not None and got[0] == reason and words in got[1], got


def test_other_records_hold_model_keys_of_the_model_layout() -> None:
    delta = _model(w=np.ones((2, 2), np.float32))  # SCAFFOLD's delta: trainable keys only
    assert check_reply(_reply(_good(), **{"dc": delta}), SENT, POLICY, train=True) is None
    wrong = _model(w=np.ones((3,), np.float32))
    assert check_reply(_reply(_good(), **{"dc": wrong}), SENT, POLICY, train=True)[0] == "layout"
    alien = _model(z=np.ones((2, 2), np.float32))
    got = check_reply(_reply(_good(), **{"dc": alien}), SENT, POLICY, train=True)
    assert got == ("layout", "dc/z: not a key of the model sent")


@pytest.mark.parametrize("examples", [0, -3, float("nan"), [1, 2], None])
def test_the_weight_must_be_a_positive_number(examples) -> None:
    content = _reply(_good())
    content["metrics"] = MetricRecord(
        {"train_loss": 1.0} if examples is None else {"train_loss": 1.0, "num-examples": examples}
    )
    got = check_reply(content, SENT, POLICY, train=True)
    assert got is not None and got[0] == "weight", got


def test_evaluate_replies_carry_no_model() -> None:
    content = RecordDict({"metrics": MetricRecord({"eval_acc": 0.5, "num-examples": 3})})
    assert check_reply(content, SENT, POLICY, train=False) is None
    assert check_reply(content, SENT, POLICY, train=True) == (
        "layout",
        "no 'arrays' record with the model",
    )


def test_the_odd_reply_out_is_the_inconsistent_one() -> None:
    same = [reply(k, _good(), 5) for k in (1, 2, 3)]
    odd = reply(4, _good(), 5)
    odd.content["metrics"]["extra"] = 1.0
    assert inconsistent([same[0], odd, *same[1:]]) == [1]
    assert inconsistent(same) == []
    assert inconsistent([odd, same[0]]) == [1]  # a tie: the first reply's records win


def test_tracking_grid_fails_only_the_bad_reply() -> None:
    from flwr.app import Message

    class Echo:
        """A Grid whose nodes 1 and 3 reply well, node 2 with a wrong shape."""

        def send_and_receive(self, messages, timeout=None):  # noqa: ANN001, ANN201, ARG002
            out = []
            for m in messages:
                node = m.metadata.dst_node_id
                arrays = _good() if node != 2 else _model(w=np.zeros(4, np.float32), n=np.array(3))
                out.append(reply(node, arrays, 10))
            return out

    grid = TrackingGrid(Echo(), POLICY)  # type: ignore[arg-type]
    messages = [Message(SENT, node, "train") for node in (1, 2, 3)]
    replies = grid.send_and_receive(messages)
    assert [r.has_error() for r in replies] == [False, True, False]
    assert "arrays/w: float32[4] where the model has float32[2, 2]" in replies[1].error.reason
    assert (grid.last.succeeded, grid.last.failed, grid.last.refused) == (2, 1, {"layout": 1})
