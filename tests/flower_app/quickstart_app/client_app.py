"""quickstart-app: a Flower ClientApp."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from quickstart_app.task import Net, load_data
from quickstart_app.task import test as test_fn
from quickstart_app.task import train as train_fn

# Flower ClientApp
app = ClientApp()

SIDES = {"digits": 8, "fashion-mnist": 28}


def _data(context: Context):  # noqa: ANN202
    cfg = context.run_config
    return load_data(
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
        str(cfg["dataset"]),
        int(cfg["max-samples"]),
        int(cfg["batch-size"]),
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the model on local data."""
    # Load the model and initialize it with the received weights
    model = Net(SIDES[context.run_config["dataset"]])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = "cuda:0" if torch.cuda.is_available() else "cpu"

    # Load the data; its order depends only on the seed, the round and the partition
    trainloader, _ = _data(context)
    rnd = int(msg.content["config"]["server-round"])
    pid = int(context.node_config["partition-id"])
    torch.manual_seed(int(context.run_config["seed"]) * 10_000 + rnd * 100 + pid)

    # Call the training function
    train_loss = train_fn(
        model,
        trainloader,
        int(context.run_config["local-epochs"]),
        float(msg.content["config"]["lr"]),
        device,
    )

    # Construct and return reply Message
    model_record = ArrayRecord(model.state_dict())
    metrics = {"train_loss": train_loss, "num-examples": len(trainloader.dataset)}
    content = RecordDict({"arrays": model_record, "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the model on local data."""
    model = Net(SIDES[context.run_config["dataset"]])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = "cuda:0" if torch.cuda.is_available() else "cpu"

    _, valloader = _data(context)
    eval_loss, eval_acc = test_fn(model, valloader, device)

    metrics = {"eval_loss": eval_loss, "eval_acc": eval_acc, "num-examples": len(valloader.dataset)}
    content = RecordDict({"metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
