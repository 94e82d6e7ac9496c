"""Honest update norms: how large ``||reply - sent||_2`` gets in fedlearn's own runs.

``server.max_update_norm`` refuses a train reply whose model moved further than
that from the model sent. Its default must never touch an honest client. This
runs the default config, every preset of ``conf/experiment`` and the default
config under every strategy (in-process, one worker, so every reply passes
through this process) and prints, per run, the largest update norm any client
sent and the largest relative to the norm of the model it received.

    python simulations/bench/update_norms.py                 # everything
    python simulations/bench/update_norms.py --only default digits_cnn
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from fedlearn.app import screening
from fedlearn.app.arrays import view
from fedlearn.checks import choices
from fedlearn.experiment import simulate

COMMON = ["runtime.workers=1", "progress=false", "server.max_update_norm=inf"]


def runs() -> dict[str, list[str]]:
    """Name -> overrides: the default config, each preset, each strategy on the default."""
    out: dict[str, list[str]] = {"default": []}
    out.update({name: [f"experiment={name}"] for name in choices("experiment")})
    for name in choices("strategy"):
        extra = {"krum": ["num_clients=10"], "bulyan": ["num_clients=10"]}.get(name, [])
        out[f"default+{name}"] = [f"strategy={name}", *extra]
    return out


def measure(overrides: list[str]) -> tuple[float, float, int]:
    """(largest norm, largest norm / ||model sent||, replies seen) of one run."""
    seen: list[tuple[float, float]] = []
    original = screening.update_norm

    def recording(reply, sent):  # noqa: ANN001, ANN202 - same signature as the original
        norm = original(reply, sent)
        size = float(
            np.sqrt(sum(float(np.sum(view(a).astype(np.float64) ** 2)) for a in sent.values()))
        )
        seen.append((norm, norm / size if size else float("inf")))
        return norm

    screening.update_norm = recording
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            result = simulate([*COMMON, *overrides], run_dir=Path(run_dir))
        assert result["status"] == "completed", result
    finally:
        screening.update_norm = original
    norms = np.array(seen)
    return float(norms[:, 0].max()), float(norms[:, 1].max()), len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="run names (default: all)")
    args = parser.parse_args()
    table = runs()
    for name in args.only or table:
        top, relative, count = measure(table[name])
        print(
            f"{name:32s} max ||update|| {top:10.3f}   relative {relative:8.4f}   ({count} replies)",
            flush=True,
        )


if __name__ == "__main__":
    main()
