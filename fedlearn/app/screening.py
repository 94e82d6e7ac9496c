"""Reply screening: what a client's reply must be before a strategy sees it.

Every runtime's replies pass through :class:`~fedlearn.app.tracking.TrackingGrid`,
which calls :func:`screen` on each exchange. A reply that fails a check becomes
a Flower Error reply, so it counts as that client's failure and the round
aggregates the rest. A client that lies costs only itself:

- ``non-finite``: an array holding NaN or Inf, a ``.npy`` payload that cannot be
  read, or a non-finite metric.
- ``layout``: arrays that do not match the model sent. A record of the same name
  as one the message carried (the model, ``arrays``) must have exactly its keys,
  dtypes and shapes; any other record (SCAFFOLD's ``scaffold-dc``) may hold only
  keys of the model, each of the model's dtype and shape.
- ``weight``: the strategy's weighting metric (``num-examples``) missing, not a
  finite number, or not positive (a zero total would end the round in a division).
- ``norm``: an update ``||reply - sent||_2`` (the model record, every floating
  array, in float64) above ``max_update_norm``: an outlier refused before
  aggregation. Many colluding clients need a robust strategy (median, trimmed
  mean, Krum) instead.
- ``inconsistent``: records (names and keys) other than those most of the round's
  replies carry, which Flower's strategies refuse for the whole round. Ties go to
  the reply that came first in message order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

from fedlearn.app.arrays import view

Layout = dict[str, tuple[str, str, tuple[int, ...]]]  # key -> (stype, dtype, shape)
_BLOCK = 1 << 20  # elements per step of the norm: bounded temporaries for any model size


@dataclass(frozen=True)
class ScreenPolicy:
    """What a reply must satisfy besides finite, readable arrays that fit the model.

    Attributes
    ----------
    max_update_norm : float or None
        Largest L2 norm of a train reply's model minus the model sent; None: no bound.
    weight_key : str or None
        The strategy's weighting metric (Flower's ``weighted_by_key``); None: not checked.
    model_key : str
        The record holding the model in messages and replies (``arrayrecord_key``).
    """

    max_update_norm: float | None = None
    weight_key: str | None = None
    model_key: str = "arrays"


def layout(record: ArrayRecord) -> Layout:
    """Each array's (stype, dtype, shape)."""
    return {k: (a.stype, a.dtype, tuple(a.shape)) for k, a in record.items()}


def _layout_error(name: str, got: Layout, want: Layout, exact: bool) -> str | None:
    if exact and set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        return f"{name}: keys differ from the model sent (missing {missing[:3]}, extra {extra[:3]})"
    for key, spec in got.items():
        if key not in want:
            return f"{name}/{key}: not a key of the model sent"
        if spec != want[key]:
            (stype, dtype, shape), (model_stype, model_dtype, model_shape) = spec, want[key]
            if stype != model_stype:
                return f"{name}/{key}: serialized as {stype}, the model as {model_stype}"
            got, has = f"{dtype}{list(shape)}", f"{model_dtype}{list(model_shape)}"
            return f"{name}/{key}: {got} where the model has {has}"
    return None


def _sq_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b||^2`` in float64, a block at a time (no model-sized temporaries)."""
    a, b = a.reshape(-1), b.reshape(-1)
    total = 0.0
    for i in range(0, a.size, _BLOCK):
        d = a[i : i + _BLOCK].astype(np.float64)
        d -= b[i : i + _BLOCK]
        total += float(d @ d)
    return total


def update_norm(reply: ArrayRecord, sent: ArrayRecord) -> float:
    """L2 norm of ``reply - sent`` over the floating arrays (same keys and shapes)."""
    total = 0.0
    for key, array in reply.items():
        if np.issubdtype(np.dtype(array.dtype), np.floating):
            total += _sq_distance(view(array), view(sent[key]))
    return float(np.sqrt(total))


def _weight_error(content: RecordDict, key: str) -> str | None:
    records = list(content.metric_records.values())
    if len(records) != 1:
        return f"metrics: {len(records)} metric records where the strategy reads one"
    value = records[0].get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"metrics/{key}: missing or not a number"
    if not np.isfinite(value) or value <= 0:
        return f"metrics/{key}={value}: must be a finite number > 0"
    return None


def check_reply(
    reply: RecordDict, sent: RecordDict, policy: ScreenPolicy, train: bool
) -> tuple[str, str] | None:
    """Why ``reply``, to a message carrying ``sent``, cannot be aggregated, as
    ``(reason, detail)``, or None. Finite values are checked elsewhere
    (:func:`~fedlearn.app.tracking.non_finite_key`); the arrays of a train reply are
    checked against the model sent, and an evaluate reply's weight alone."""
    model = sent.array_records.get(policy.model_key)
    if train and model is not None:
        if policy.model_key not in reply.array_records:
            return "layout", f"no '{policy.model_key}' record with the model"
        known: Layout = {}
        for record in sent.array_records.values():
            known.update(layout(record))
        for name, record in reply.array_records.items():
            exact = name in sent.array_records
            want = layout(sent[name]) if exact else known
            why = _layout_error(name, layout(record), want, exact)
            if why is not None:
                return "layout", why
        if policy.max_update_norm is not None:
            norm = update_norm(reply[policy.model_key], model)
            if not norm <= policy.max_update_norm:
                bound = policy.max_update_norm
                return "norm", f"update norm {norm:.4g} exceeds max_update_norm={bound:g}"
    if policy.weight_key is not None:
        why = _weight_error(reply, policy.weight_key)
        if why is not None:
            return "weight", why
    return None


def signature(content: RecordDict) -> tuple:
    """The names and keys of a reply's array and metric records."""
    arrays = sorted((n, tuple(sorted(r.keys()))) for n, r in content.array_records.items())
    metrics = sorted((n, tuple(sorted(r.keys()))) for n, r in content.metric_records.items())
    return tuple(arrays), tuple(metrics)


def inconsistent(replies: list[Message]) -> list[int]:
    """Indices of the replies whose records differ from those most replies carry."""
    sigs = [signature(r.content) for r in replies]
    if len(set(sigs)) <= 1:
        return []
    counts = Counter(sigs)
    best = max(counts.values())
    winner = next(s for s in sigs if counts[s] == best)
    return [i for i, s in enumerate(sigs) if s != winner]
