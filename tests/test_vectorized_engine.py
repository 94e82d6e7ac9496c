"""The vectorized engine against fedlearn.training, client by client."""

from __future__ import annotations

import copy

import pytest
import torch

from fedlearn import training
from fedlearn.app import client_strategies
from fedlearn.models.cnn import CNN
from fedlearn.training import Term
from fedlearn.vectorized.engine import ClientTask, _sgd_step, evaluate_group, train_group

CPU = torch.device("cpu")
# Measured: 3e-8 after a few steps (float32 rounding of other kernels' summation order).
WEIGHTS_ATOL = 1e-6
LOSS_RTOL = 1e-6
SIZES = [5, 40, 57, 23, 16, 0]  # unequal, one shorter than a batch, one empty


def _setup(sizes=SIZES):
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, channels=4, hidden=16)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    data = [(torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))) for n in sizes]
    return model, start, data


def _tasks(start, data, settings):
    return [
        ClientTask(
            start, x, y, training.batch_schedule(len(y), settings, torch.Generator().manual_seed(i))
        )
        for i, (x, y) in enumerate(data)
    ]


SETTINGS = [
    training.TrainSettings(lr=0.1, batch_size=8),
    training.TrainSettings(lr=0.1, momentum=0.9, batch_size=16, local_epochs=2),
    training.TrainSettings(
        lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=16, local_epochs=3, max_steps=7
    ),
    training.TrainSettings(lr=0.05, momentum=0.5, batch_size=16, proximal_mu=0.5),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["sgd", "momentum", "decay+max_steps", "prox"])
def test_each_client_trains_as_it_would_alone(settings):
    model, start, data = _setup()
    out = train_group(model, _tasks(start, data, settings), settings, CPU)
    assert all(torch.equal(v, start[k]) for k, v in model.named_parameters())  # untouched
    for i, ((x, y), (params, metrics)) in enumerate(zip(data, out, strict=True)):
        alone = copy.deepcopy(model)
        expected = training.train(alone, x, y, settings, CPU, torch.Generator().manual_seed(i))
        assert metrics["num-steps"] == expected["num-steps"]
        assert metrics["num-examples"] == expected["num-examples"] == len(y)
        assert metrics["train_loss"] == pytest.approx(expected["train_loss"], rel=LOSS_RTOL)
        for k, p in alone.named_parameters():
            torch.testing.assert_close(params[k], p.detach(), atol=WEIGHTS_ATOL, rtol=0)
    assert out[-1][1]["num-steps"] == 0 and torch.equal(
        out[-1][0]["classifier.2.bias"], start["classifier.2.bias"]
    )


def test_strategy_terms_as_alone():
    """SCAFFOLD's gradient term and FedDyn's loss term, each client with its own tensors."""
    settings = SETTINGS[1]
    model, start, data = _setup()
    tasks = _tasks(start, data, settings)
    for i, task in enumerate(tasks):
        torch.manual_seed(i)
        noise = {k: 0.01 * torch.randn_like(v) for k, v in start.items()}
        task.grad_terms = (Term(client_strategies.scaffold_correction, (noise,)),)
        dyn = (noise, start, torch.tensor(0.1 * (i + 1)))
        task.loss_terms = (Term(client_strategies.feddyn_term, dyn),)
    out = train_group(model, tasks, settings, CPU)
    for i, (task, (params, metrics)) in enumerate(zip(tasks, out, strict=True)):
        alone = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(i)
        expected = training.train(
            alone, task.x, task.y, settings, CPU, gen, task.loss_terms, task.grad_terms
        )
        assert metrics["train_loss"] == pytest.approx(expected["train_loss"], rel=LOSS_RTOL)
        for k, p in alone.named_parameters():
            torch.testing.assert_close(params[k], p.detach(), atol=WEIGHTS_ATOL, rtol=0)


def test_a_client_does_not_depend_on_its_group():
    """Bit for bit, whoever else is in the group and however many (a lone client is
    given a companion: alone, other kernels run)."""
    settings = SETTINGS[2]
    model, start, data = _setup()
    tasks = _tasks(start, data, settings)
    whole = train_group(model, tasks, settings, CPU)
    for members in ([1], [1, 2], [3, 1], [0, 1, 4]):
        part = train_group(model, [tasks[i] for i in members], settings, CPU)
        result = part[members.index(1)]
        assert result[1] == whole[1][1]
        assert all(torch.equal(result[0][k], whole[1][0][k]) for k in start)


def test_sgd_step_is_torch_sgd_bit_for_bit():
    torch.manual_seed(0)
    settings = training.TrainSettings(lr=0.1, momentum=0.9, weight_decay=1e-2)
    stacked = {"w": torch.randn(3, 5, 7), "b": torch.randn(3, 7)}
    grads = [{k: torch.randn_like(v) for k, v in stacked.items()} for _ in range(4)]
    expected = []
    for i in range(3):
        params = [torch.nn.Parameter(stacked[k][i].clone()) for k in stacked]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2)
        for t, g in enumerate(grads):
            if i == 2 and t == 2:  # client 2 finishes after two steps
                break
            for p, k in zip(params, stacked, strict=True):
                p.grad = g[k][i].clone()
            opt.step()
        expected.append(params)
    momenta: dict = {}
    for t, g in enumerate(grads):
        live = torch.tensor([True, True, t < 2])
        _sgd_step(stacked, g, momenta, settings, None if t < 2 else live)
    for i in range(3):
        for p, k in zip(expected[i], stacked, strict=True):
            assert torch.equal(stacked[k][i], p.detach())


def test_evaluates_each_client_as_alone():
    model, start, data = _setup([5, 700, 0, 37])
    other = {k: v + 0.01 for k, v in start.items()}
    params = [start, other, start, other]
    out = evaluate_group(model, params, data, CPU, batch_size=512)
    for p, (x, y), res in zip(params, data, out, strict=True):
        alone = copy.deepcopy(model)
        alone.load_state_dict(p)
        expected = training.evaluate(alone, x, y, CPU)
        assert res["num-examples"] == expected["num-examples"]
        assert res["accuracy"] == expected["accuracy"]
        assert res["loss"] == pytest.approx(expected["loss"], rel=LOSS_RTOL)
