"""A client's ``Context.state`` kept on disk, so a restarted client process carries on.

Client-side strategy state lives in the node's ``Context.state`` from round to
round: SCAFFOLD's control variate, FedDyn's gradient term, whatever a custom
ClientApp keeps. A client process that dies loses it. With
``fedlearn-client --state-file PATH`` the client writes that state after every
message it handles (atomically: a crash mid-write leaves the previous file) and,
started again, reads it back when it joins the same run as the same node.

The server names its run with a key kept in the run folder (``run-key``), so a
server resumed from its run folder is the same run to its clients. State saved
for another run or another node is left unused and replaced by the first save;
a file that cannot be read is set aside as ``PATH.unreadable`` and the client
starts fresh, never with half a state.

The file holds what the client last wrote, a pending state included
(:mod:`fedlearn.app.client_strategies`): a state is committed only once the
server has said, after the round's checkpoint, that the update was
aggregated. A server resumed from its last checkpoint speaks of the rounds up
to it, so its clients carry on from the state that matches its model and a
round they trained before the crash is redone, its pending state replaced.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

from fedlearn.records import atomic_write
from fedlearn.runtime.grpc.settings import log

RUN_KEY = "run-key"  # the run_config entry (and the run folder's file) naming the run
MAGIC = b"fedlearn-client-state 1\n"


def run_key(run_dir: Path) -> str:
    """The run's key: read from ``run_dir/run-key``, made there on the run's first start."""
    path = Path(run_dir) / RUN_KEY
    if path.exists():
        return path.read_text().strip()
    key = uuid.uuid4().hex
    atomic_write(path, (key + "\n").encode())
    return key


def save(path: Path, key: str, node: str, state: RecordDict, previous: bytes = b"") -> bytes:
    """Write ``state`` for run ``key`` and node ``node`` to ``path``; return the bytes.

    Nothing is written when they equal ``previous`` (what the last call returned): an
    evaluate message, or a strategy without client state, costs no file write and sync.
    """
    header = json.dumps({"run-key": key, "node": node}).encode() + b"\n"
    data = MAGIC + header + recorddict_to_proto(state).SerializeToString()
    if data != previous:
        atomic_write(Path(path), data)
    return data


def load(path: Path, key: str, node: str) -> RecordDict | None:
    """The state saved at ``path`` for run ``key`` and node ``node``; None when there is
    none for them. An unreadable file is moved aside (``.unreadable``) with a warning."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise ValueError("not a fedlearn client state file")
        header, _, body = data[len(MAGIC) :].partition(b"\n")
        meta = json.loads(header)
        if meta.get("run-key") != key or meta.get("node") != node:
            log.info("state file %s is from another run or node: starting fresh", path)
            return None
        proto = ProtoRecordDict()
        proto.ParseFromString(body)
        return recorddict_from_proto(proto)
    except Exception as err:  # noqa: BLE001 - any unreadable file: keep it, start fresh
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        log.warning(
            "state file %s is unreadable (%s); moved to %s, starting fresh", path, err, aside
        )
        return None
