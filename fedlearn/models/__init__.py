"""Models. Each takes ``input_shape`` and ``num_classes`` from the dataset's
:class:`~fedlearn.data.DataSpec` plus its own sizes from ``conf/model/<name>.yaml``,
and lists the data kinds it accepts in ``KINDS``."""

from __future__ import annotations

from typing import Any

from torch import nn

from fedlearn.data import DataSpec
from fedlearn.targets import NotAllowed, call, locate


def build_model(cfg: dict[str, Any], spec: DataSpec) -> nn.Module:
    """Build the model a plain ``{_target_: ..., **sizes}`` dict names, sized for ``spec``.

    Raises
    ------
    ValueError
        In one line, when the model does not accept the dataset's kind of data.
    fedlearn.targets.NotAllowed
        When the class is not on this process's allow-list (:mod:`fedlearn.targets`)
        or a setting is not a plain scalar; nothing is imported or called then.
    """
    cls, sizes = locate(cfg, "model")
    if not isinstance(cls, type):
        raise NotAllowed(f"model._target_={cfg['_target_']} is not a class")
    kinds = getattr(cls, "KINDS", None)
    if kinds is not None and spec.kind not in kinds:
        raise ValueError(
            f"model={cls.__name__} does not fit {spec.kind} data {spec.input_shape};"
            f" it takes {' or '.join(kinds)} data"
        )
    shape = tuple(spec.input_shape)
    return call(cls, "model", input_shape=shape, num_classes=spec.num_classes, **sizes)
