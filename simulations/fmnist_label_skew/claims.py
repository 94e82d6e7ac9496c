"""The literature claims of a study, tested on a finished sweep's run folders.

Each strategy against FedAvg in the same block, paired by seed on the final test
accuracy as the report pairs runs (fedlearn.compare.analysis.compare_paired: mean
difference, 95% t interval, paired t-test), Holm-corrected over the comparisons of
a block. In study 1, FedAvgM's rows at the two skews test Hsu et al. 2019 (its
gain should grow with the skew).

The folder is one sweep (``fedlearn-compare``'s ``hydra.sweep.dir``, holding
``runs/``), or study 1's pair of sweeps (``momentum/`` with FedAvg, ``plain_sgd/``):

    python simulations/fmnist_label_skew/claims.py simulations/fmnist_label_skew/results_pilot
    python simulations/fmnist_label_skew/claims.py simulations/shakespeare_server_opt/results_pilot
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedlearn.compare.analysis import Group, compare_paired, make_group
from fedlearn.compare.runs import read_run
from fedlearn.compare.stats import holm

BASE = "fedavg"


def seeds_of(folder: Path) -> Group:
    """A strategy's runs of a block (``<strategy>/seed=<s>``), as the report groups them."""
    runs = [read_run(d) for d in sorted(folder.glob("seed=*"))]
    return make_group(folder.name, folder.parent.name, runs, None)


def block_table(runs: Path, base_runs: Path) -> list[str]:
    """One markdown row per strategy of a block folder ``runs/<block>``, against FedAvg
    from ``base_runs/<block>`` (the same block of the sweep that has FedAvg)."""
    base = seeds_of(base_runs / BASE)
    rows, tests = [], []
    for folder in sorted(p for p in runs.iterdir() if p.is_dir() and p.name != BASE):
        tests.append((folder.name, compare_paired(seeds_of(folder), base)))
    corrected = holm([t.p_t if t else None for _, t in tests])
    for (name, t), p in zip(tests, corrected, strict=True):
        if t is None:
            continue
        rows.append(
            f"| {runs.name} | {runs.parent.parent.name} | {name} | {t.diff:+.3f} "
            f"[{t.ci_low:+.3f}, {t.ci_high:+.3f}] | {t.p_t:.3f} | {p:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweeps",
        type=Path,
        help="a sweep folder (holding runs/), or one holding momentum/ and plain_sgd/",
    )
    root = parser.parse_args().sweeps
    sweeps = [root] if (root / "runs").is_dir() else [root / "momentum", root / "plain_sgd"]
    print("| block | sweep | strategy | vs FedAvg [95% CI] | paired t p | Holm p |")
    print("|---|---|---|---|---|---|")
    for sweep in sweeps:
        for block in sorted((sweep / "runs").iterdir()):
            for row in block_table(block, sweeps[0] / "runs" / block.name):
                print(row)


if __name__ == "__main__":
    main()
