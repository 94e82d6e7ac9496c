"""Models. Each takes ``input_shape`` and ``num_classes`` from the dataset's
:class:`~fedlearn.data.DataSpec` plus its own sizes from ``conf/model/<name>.yaml``,
and lists the data kinds it accepts in ``KINDS``."""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from torch import nn

from fedlearn.data import DataSpec


def build_model(cfg: dict[str, Any], spec: DataSpec) -> nn.Module:
    """Build the model a plain ``{_target_: ..., **sizes}`` dict names, sized for ``spec``.

    Raises
    ------
    ValueError
        In one line, when the model does not accept the dataset's kind of data.
    """
    cfg = dict(cfg)
    cls = get_class(cfg.pop("_target_"))
    kinds = getattr(cls, "KINDS", None)
    if kinds is not None and spec.kind not in kinds:
        raise ValueError(
            f"model={cls.__name__} does not fit {spec.kind} data {spec.input_shape};"
            f" it takes {' or '.join(kinds)} data"
        )
    return cls(input_shape=tuple(spec.input_shape), num_classes=spec.num_classes, **cfg)
