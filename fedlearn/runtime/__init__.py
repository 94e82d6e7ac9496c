"""Runtimes: a Grid plus the code that starts it. They know nothing about strategies."""

from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity


def set_server_identity(run_id: int) -> None:
    """Tell Flower which run this process serves: strategies build Messages whose
    metadata reads it (``flwr.simulation`` does the same for its server thread)."""
    TaskIdentity.run_id = run_id
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
