"""What a ``fedlearn-compare`` command asks for: options, blocks, strategies, seeds.

The command line is Hydra's (``strategy=a,b seed=0,1,2 partitioner.alpha=0.1,1.0``)
plus ``compare.<option>=value``. Swept settings other than the strategy and the
seed make *blocks* (one per combination); strategies are compared within a block,
seed by seed. Each block's runs live in a folder named by its settings (the
*slug*), laid out as :data:`fedlearn.compare.runs.LAYOUT` says.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

PLAN = "plan.json"
SAMPLERS = ("tpe", "random", "grid")
OPTIONS = {
    "target": "accuracy for rounds and bytes to target (default: auto)",
    "tune": "tuning trials per strategy and block (default 0: untuned)",
    "tune_seed": "the seed of every tuning trial (default 1000: not an evaluation seed)",
    "tune_last": "a trial's score: mean validation accuracy of its last k rounds (default 5)",
    "tune_rounds": "rounds of a tuning trial (default: num_rounds, as the evaluation runs)",
    "reference_seeds": "run the references on the first k seeds only (default: every seed)",
    "sampler": "tpe (default), random or grid: Optuna's sampler, seeded with tune_seed",
    "jobs": "runs at once, through Hydra's joblib launcher (default 1)",
    "search": "a folder of search-space YAMLs (default fedlearn/conf/search)",
}


@dataclass
class Options:
    """``compare.*`` settings."""

    target: float | None = None
    tune: int = 0
    tune_seed: int = 1000
    tune_last: int = 5
    tune_rounds: int | None = None
    reference_seeds: int | None = None
    sampler: str = "tpe"
    jobs: int = 1
    search: str | None = None
    # Not a compare.* option: how trials draw their values (fedlearn.compare.samplers).
    # "shared": each value from its own stream, the same across strategies; a plan.json
    # without it was tuned from one stream per study.
    draws: str = "shared"


def _int(key: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise ValueError(f"compare.{key}={value}: give an integer >= {low}")
    return number


def target_value(value: str | None) -> float | None:
    """``compare.target``: an accuracy in [0, 1], or auto."""
    if value is None or value in ("null", "auto", ""):
        return None
    try:
        target = float(value)
    except ValueError:
        target = -1.0
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"compare.target={value}: give an accuracy in [0, 1] or auto")
    return target


def parse_options(raw: dict[str, str]) -> Options:
    """Check and convert ``compare.*`` values (one-line errors naming the option)."""
    for key in raw:
        if key not in OPTIONS:
            raise ValueError(
                f"unknown option compare.{key}; allowed: "
                + ", ".join(f"compare.{o}" for o in sorted(OPTIONS))
            )
    opts = Options(target=target_value(raw.get("target")))
    if "tune" in raw:
        opts.tune = _int("tune", raw["tune"], 0)
    if "tune_seed" in raw:
        opts.tune_seed = _int("tune_seed", raw["tune_seed"], 0)
    if "tune_last" in raw:
        opts.tune_last = _int("tune_last", raw["tune_last"], 1)
    for key in ("tune_rounds", "reference_seeds"):
        if raw.get(key) not in (None, "", "null"):
            setattr(opts, key, _int(key, raw[key], 1))
    if "jobs" in raw:
        opts.jobs = _int("jobs", raw["jobs"], 1)
    if "sampler" in raw:
        if raw["sampler"] not in SAMPLERS:
            raise ValueError(f"compare.sampler={raw['sampler']}; allowed: {', '.join(SAMPLERS)}")
        opts.sampler = raw["sampler"]
    if raw.get("search"):
        opts.search = raw["search"]
    return opts


@dataclass
class Block:
    """One combination of the swept settings other than strategy and seed."""

    slug: str  # its folder name
    overrides: list[str]


@dataclass
class Sweep:
    """A parsed ``fedlearn-compare`` command."""

    root: Path
    options: Options
    fixed: list[str]  # task overrides of every run
    hydra: list[str]  # hydra overrides of every multirun (launcher, ...)
    strategies: list[str]
    seeds: list[int]
    strategy_sweeps: list[str] = field(default_factory=list)  # strategy.x=a,b (untuned)
    blocks: list[Block] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    @property
    def tuned(self) -> bool:
        return self.options.tune > 0

    def save(self, spaces: dict[str, list[dict[str, Any]]]) -> None:
        """plan.json: what this sweep asked for (the report reads it).

        A folder holding another comparison is refused: its runs would be rerun over.
        The same settings with other strategies, seeds or options extend it."""
        old = load_plan(self.root)
        blocks = [b.overrides for b in self.blocks]
        if old and (old["fixed"], [b["overrides"] for b in old["blocks"]]) != (self.fixed, blocks):
            raise ValueError(
                f"hydra.sweep.dir={self.root} holds another comparison (its {PLAN} has other"
                " settings or blocks); give another folder"
            )
        if old and old["options"].get("tune") and self.tuned:
            if old["options"].get("draws", "one stream") != self.options.draws:
                raise ValueError(
                    f"hydra.sweep.dir={self.root} was tuned by an earlier fedlearn whose"
                    " trials drew their values from one stream per study; its trials would"
                    " not be redrawn alike: give another folder"
                )
        plan = asdict(self)
        plan["root"] = str(self.root)
        plan["spaces"] = spaces
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / PLAN).write_text(json.dumps(plan, indent=2) + "\n")


def load_plan(root: Path) -> dict[str, Any] | None:
    """A sweep folder's plan.json, or None (a folder made otherwise)."""
    path = Path(root) / PLAN
    return json.loads(path.read_text()) if path.exists() else None


def slug(overrides: list[str]) -> str:
    """A block's folder name: its settings, ``all`` when there are none."""
    text = ",".join(overrides) or "all"
    return text.replace("/", "_")


def parse(argv: list[str], now: datetime | None = None) -> Sweep:
    """Split a command line into options, fixed settings, strategies, seeds and blocks."""
    raw: dict[str, str] = {}
    hydra_args, task = [], []
    root = None
    for arg in argv:
        if arg in ("-m", "--multirun"):
            continue
        if arg.startswith("compare."):
            key, _, value = arg[len("compare.") :].partition("=")
            raw[key] = value
        elif arg.startswith("hydra.sweep.dir="):
            root = Path(arg.partition("=")[2])
        elif arg.startswith("hydra.sweep.subdir="):
            continue  # the layout is fedlearn-compare's own (runs.LAYOUT)
        elif arg.lstrip("+~").startswith(("hydra.", "hydra/")):
            hydra_args.append(arg)
        else:
            task.append(arg)
    options = parse_options(raw)
    if root is None:
        stamp = (now or datetime.now()).strftime("%Y-%m-%d/%H-%M-%S")
        root = Path("multirun") / stamp
    fixed, axes, strategies, seeds, strategy_sweeps = [], [], ["fedavg"], [0], []
    for o in OverridesParser.create().parse_overrides(task):
        key = o.key_or_group
        if not o.is_sweep_override():
            if key == "strategy":
                strategies = [o.get_value_element_as_str()]
            elif key == "seed":
                seeds = [_int("seed", o.get_value_element_as_str(), 0)]
            else:
                fixed.append(o.input_line)
            continue
        if not o.is_discrete_sweep():
            raise ValueError(
                f"{o.input_line}: a range to search is what compare.tune does;"
                " list values (a,b,c) or put the range in conf/search"
            )
        values = list(o.sweep_string_iterator())
        if key == "strategy":
            strategies = values
        elif key == "seed":
            seeds = [_int("seed", v, 0) for v in values]
        elif key.startswith("strategy."):
            strategy_sweeps.append(o.input_line)
        else:
            axes.append([f"{o.get_key_element()}={v}" for v in values])
    if options.tune and strategy_sweeps:
        raise ValueError(
            f"compare.tune={options.tune} chooses strategy settings itself; drop the sweep"
            f" {strategy_sweeps[0]} or put its values in a conf/search YAML"
        )
    blocks = [Block(slug(list(combo)), list(combo)) for combo in itertools.product(*axes)]
    if not any(a.startswith("progress=") for a in fixed):
        fixed.append("progress=false")  # live bars from parallel jobs would interleave
    return Sweep(root, options, fixed, hydra_args, strategies, seeds, strategy_sweeps, blocks, argv)
