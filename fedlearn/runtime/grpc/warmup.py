"""Prepare fedlearn's own ClientApp before a client says Ready: data, model, torch kernels.

Otherwise a node's first round pays for partitioning and torch's lazy start-up
(seconds), which dominates rounds that sample fresh nodes. The app runs one
throwaway training step and one evaluation on a copy of the Context; every
real message loads the weights it carries, and the torch RNG is restored, so
results are unchanged.
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any

from flwr.app import Context, Message, Metadata, RecordDict

from fedlearn.runtime.grpc.settings import log
from fedlearn.targets import NotAllowed


def is_fedlearn_app(app: Any) -> bool:
    """Whether ``app`` is fedlearn's own ClientApp (already imported: nothing is loaded)."""
    module = sys.modules.get("fedlearn.app.client_app")
    return module is not None and app is getattr(module, "app", None)


def warm_up(app: Any, context: Context) -> None:
    """Run ``app`` (fedlearn's ClientApp) once on a copy of ``context``.

    Raises
    ------
    fedlearn.targets.NotAllowed
        When the server's run config names code this client does not run; any
        other failure is logged (the first real message reports it to the server).
    """
    module = sys.modules["fedlearn.app.client_app"]
    try:
        import torch
        from flwr.app import ConfigRecord

        from fedlearn.app.arrays import to_record

        context = copy.deepcopy(context)
        arrays = to_record(module.job_model(module.client_job(context)).state_dict())
        config = ConfigRecord({"server-round": 0, "max-steps": 1})
        with torch.random.fork_rng():
            for kind in ("train", "evaluate"):
                meta = Metadata(
                    context.run_id,
                    "warm-up",
                    1,
                    context.node_id,
                    "",
                    "warm-up",
                    time.time(),
                    60.0,
                    kind,
                )
                content = RecordDict({"arrays": arrays, "config": config})
                app(Message(metadata=meta, content=content), context)
    except NotAllowed:
        raise
    except Exception as err:  # noqa: BLE001 - reported by the first real message
        log.warning("could not prepare the ClientApp: %s", err)
