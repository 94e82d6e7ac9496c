"""References every comparison is read against: the centralized baseline and IID runs.

- The centralized baseline: all training data on one client (``num_clients=1``,
  FedAvg of one update is the update), the same model, and as many optimizer steps
  in total as the block's federated runs took (their recorded ``train_steps``),
  spread over the same number of rounds. One per block and seed.
- The IID run of a strategy: the same configuration (tuned values included) with
  the IID partitioner, for blocks whose partition is not IID. The paired
  difference, non-IID minus IID, is what the skew costs that configuration.

Both are ordinary fedlearn runs under ``references/`` of a compare sweep
(:data:`fedlearn.compare.runs.LAYOUT`), matched to their block through the block
folder they share with the compared runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedlearn.compare.analysis import Group, compare_paired, make_group
from fedlearn.compare.runs import CENTRAL, IID, Run

# Settings allowed to differ between a compared run and its IID reference.
IID_FREE = ("partitioner.", "seed", "resume", "progress")


@dataclass
class Central:
    """A block's centralized baseline."""

    block: str
    group: Group


def _same_but_partition(a: Run, b: Run) -> bool:
    """Same settings apart from the partitioner and the seed (and keys mirroring it)."""
    for k in set(a.config) | set(b.config):
        va, vb = a.config.get(k), b.config.get(k)
        if k.startswith(IID_FREE) or va == vb or (va == a.seed and vb == b.seed):
            continue
        return False
    return True


def block_of_slug(compared: list[Run]) -> dict[str, str]:
    """Block label of each block folder, from the compared runs inside it."""
    out: dict[str, str] = {}
    for run in compared:
        if run.slug:
            out.setdefault(run.slug, run.block)
    return out


def attach(
    groups: list[Group], references: list[Run], compared: list[Run], target: float | None
) -> list[Central]:
    """Set each group's ``iid``/``vs_iid``/``vs_central``; return the blocks' baselines."""
    slug_block = block_of_slug(compared)
    centrals: list[Central] = []
    for slug, block in slug_block.items():
        runs = [r for r in references if r.role == CENTRAL and r.slug == slug]
        if runs and all(c.block != block for c in centrals):
            for r in runs:
                r.group, r.block = "centralized", block
            centrals.append(Central(block, make_group("centralized", block, runs, target)))
    for g in groups:
        central = next((c.group for c in centrals if c.block == g.block), None)
        g.vs_central = compare_paired(g, central)
        slugs = {r.slug for r in g.runs if r.slug}
        iid = [
            r
            for r in references
            if r.role == IID
            and r.slug in slugs
            and any(_same_but_partition(r, member) for member in g.runs)
        ]
        if iid:
            for r in iid:
                r.group, r.block = f"{g.name} (IID) {g.block}".strip(), g.block
            g.iid = make_group(f"{g.name} (IID)", g.block, iid, target)
            g.vs_iid = compare_paired(g, g.iid)
    return centrals
