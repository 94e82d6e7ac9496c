"""Run a comparison step by step: tune, evaluate on every seed, run the references.

1. Tuning (``compare.tune=N``): per block and strategy, one Optuna study of N
   trials on the tuning seed through Hydra's Optuna sweeper, each trial scored on
   validation (:mod:`fedlearn.compare.tuning`); the centralized baseline is tuned
   with the same budget (its client learning rate).
2. Evaluation: each strategy, at its chosen values (untuned: as configured), on
   every seed.
3. References (:mod:`fedlearn.compare.references`): the centralized baseline on
   every seed, and for a non-IID block each strategy's IID run.

Each step is a Hydra multirun (:func:`fedlearn.compare.sweep.multirun`) whose jobs
reuse finished run folders, so the same command continues an interrupted sweep.
"""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fedlearn.compare import plan as plan_module
from fedlearn.compare.plan import Block, Sweep
from fedlearn.compare.runs import CENTRAL, IID, REFERENCES, RUNS, TUNING, find_run_dirs, read_run
from fedlearn.compare.space import Param, check_grid, load_space
from fedlearn.compare.sweep import SCORE_LAST, multirun, quoted
from fedlearn.compare.tuning import choose, override, trials
from fedlearn.loggers.tracker import SWEEP_ENV

SHARED_SAMPLERS = {  # compare.sampler -> the sampler with draws shared across strategies
    "tpe": "fedlearn.compare.samplers.SharedTPESampler",
    "random": "fedlearn.compare.samplers.SharedRandomSampler",
}
CENTRAL_SETTINGS = [
    "strategy=fedavg",
    "partitioner=iid",
    "num_clients=1",
    "strategy.fraction_train=1.0",
    "strategy.fraction_evaluate=1.0",
    "strategy.min_train_nodes=1",
    "strategy.min_evaluate_nodes=1",
    "strategy.min_available_nodes=1",
]
CENTRAL_DROPS = (
    "strategy",
    "partitioner",
    "num_clients",
    "client.max_steps",
    "client.local_epochs",
)


def _key(item: str) -> str:
    return item.lstrip("+~").partition("=")[0]


def _without(items: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [
        a for a in items if not any(_key(a) == p or _key(a).startswith(p + ".") for p in prefixes)
    ]


def say(text: str) -> None:
    """One progress line on the terminal."""
    print(f"fedlearn-compare: {text}", flush=True)


class Driver:
    """Runs the steps of one :class:`Sweep`."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.opts = sweep.options
        self.spaces: dict[str, list[Param]] = {}
        self.chosen: dict[tuple[str, str], list[str]] = {}

    # -- settings ---------------------------------------------------------------------

    def base(self, block: Block) -> list[str]:
        return [*self.sweep.fixed, *block.overrides]

    def trial_base(self, block: Block) -> list[str]:
        """A tuning trial's settings: the block's, with ``compare.tune_rounds`` if set."""
        rounds = self.opts.tune_rounds
        return [*self.base(block), *([f"num_rounds={rounds}"] if rounds else [])]

    def hydra_args(self) -> list[str]:
        args = [*self.sweep.hydra, f"++hydra.job.env_set.{SCORE_LAST}={self.opts.tune_last}"]
        args.append(f"++hydra.job.env_set.{SWEEP_ENV}={quoted(str(self.sweep.root))}")  # trackers
        if self.opts.jobs > 1:
            if not any(_key(a) == "hydra/launcher" for a in args):
                args.append("hydra/launcher=joblib")
            args.append(f"hydra.launcher.n_jobs={self.opts.jobs}")
        return args

    def seeds(self, first: int | None = None) -> str:
        """The seed sweep: every seed, or the ``first`` ones."""
        return "seed=" + ",".join(str(s) for s in self.sweep.seeds[:first])

    def composed(self, overrides: list[str]) -> DictConfig:
        from fedlearn.experiment import compose_config

        return compose_config(overrides)

    def prepare(self) -> None:
        """Check every block composes; load and check the search spaces; save plan.json."""
        fixed_keys = {_key(a) for a in self.sweep.fixed}
        for block in self.sweep.blocks:
            for s in self.sweep.strategies:
                cfg = self.composed([f"strategy={s}", *self.base(block)])
                if not self.sweep.tuned:
                    continue
                if not float(cfg.dataset.get("val_fraction", 0.0) or 0.0) > 0:
                    raise ValueError(
                        f"compare.tune={self.opts.tune} chooses on the validation set, but"
                        " dataset.val_fraction is 0; set it > 0"
                    )
                space = load_space(s, self.opts.search)
                keys = fixed_keys | {_key(a) for a in block.overrides}
                space = [p for p in space if p.key not in keys]  # the command line fixes these
                for p in space:
                    if OmegaConf.select(cfg, p.key, default="\0") == "\0":
                        raise ValueError(f"search space of strategy={s}: {p.key} is not a setting")
                if self.opts.sampler == "grid":
                    check_grid(space, s)
                self.spaces[s] = space
        if self.sweep.tuned:
            central = [p for p in load_space("client", self.opts.search) if p.key not in fixed_keys]
            self.spaces[CENTRAL] = central
        self.sweep.save({s: [p.as_dict() for p in sp] for s, sp in self.spaces.items()})

    # -- steps ------------------------------------------------------------------------

    def tune(self, block: Block, name: str, task: list[str]) -> list[str]:
        """One Optuna study; returns the chosen values as overrides ([] if none)."""
        space = self.spaces[name]
        folder = self.sweep.root / TUNING / block.slug / name
        if not space:
            say(f"nothing to tune for {name} [{block.slug}]: the command line fixes its settings")
            return []
        say(f"tuning {name} [{block.slug}]: {self.opts.tune} trials")
        sampler = [f"hydra/sweeper/sampler={self.opts.sampler}"]
        if self.opts.sampler != "grid":
            # Draws shared across strategies: trial k tries the same client lr in each.
            shared = SHARED_SAMPLERS[self.opts.sampler]
            sampler.append(f"hydra.sweeper.sampler._target_={shared}")
            sampler.append(f"hydra.sweeper.sampler.seed={self.opts.tune_seed}")
        hydra_args = [
            *self.hydra_args(),
            "hydra/sweeper=optuna",
            *sampler,
            "hydra.sweeper.direction=maximize",
            f"hydra.sweeper.n_trials={self.opts.tune}",
            f"hydra.sweeper.n_jobs={self.opts.jobs}",
            "hydra.sweeper.max_failure_rate=1.0",
            f"hydra.sweeper.study_name={quoted(f'{block.slug}/{name}')}",
        ]
        random.seed(self.opts.tune_seed)  # the grid sampler's order
        fixed = [*task, f"seed={self.opts.tune_seed}"]
        sweeps = [f"{p.key}={p.sweep(self.opts.sampler)}" for p in space]
        multirun([*fixed, *sweeps], hydra_args, folder, fixed)
        runs = [read_run(p) for p in find_run_dirs(folder)] if folder.exists() else []
        best = choose(trials(runs, [p.key for p in space], self.opts.tune_last))
        if best is None:
            say(f"tuning {name} [{block.slug}]: no trial completed; using its defaults")
            return []
        return [override(k, v) for k, v in best.values.items()]

    def evaluate(self, block: Block, strategy: str) -> None:
        task = [
            f"strategy={strategy}",
            *self.base(block),
            *self.chosen.get((block.slug, strategy), []),
        ]
        say(f"running {strategy} [{block.slug}] on {len(self.sweep.seeds)} seed(s)")
        multirun(
            [*task, *self.sweep.strategy_sweeps, self.seeds()],
            self.hydra_args(),
            self.sweep.root / RUNS / block.slug / strategy,
            task,
        )

    def central_task(self, base: list[str], steps_from: Path, slug: str) -> list[str] | None:
        """The centralized baseline's settings from a block's ``base``: as many optimizer
        steps in total as the federated runs under ``steps_from`` took (their median),
        over as many rounds."""
        from fedlearn.data import load_dataset
        from fedlearn.data.partition import client_indices, local_split

        found = find_run_dirs(steps_from) if steps_from.exists() else []
        runs = [read_run(p, self.sweep.root) for p in found]
        steps = [
            int(r.result["train_steps"])
            for r in runs
            if r.ok and r.result.get("train_steps") and r.strategy != CENTRAL
        ]
        if not steps:
            say(f"no centralized baseline for [{slug}]: no federated run completed")
            return None
        total = int(statistics.median(steps))
        task = [*_without(base, CENTRAL_DROPS), *CENTRAL_SETTINGS]
        cfg = OmegaConf.to_container(self.composed(task), resolve=True)
        per_round = math.ceil(total / int(cfg["num_rounds"]))  # type: ignore[index]
        data = load_dataset(cfg["dataset"])  # type: ignore[index]
        parts = client_indices(cfg["dataset"], cfg["partitioner"], 1, int(cfg["seed"]))  # type: ignore[index]
        train, _, _ = local_split(data, parts[0], float(cfg["client"]["eval_fraction"]))  # type: ignore[index]
        per_epoch = math.ceil(len(train) / int(cfg["client"]["batch_size"]))  # type: ignore[index]
        return [
            *task,
            f"client.max_steps={per_round}",
            f"client.local_epochs={math.ceil(per_round / per_epoch)}",
        ]

    def references(self, block: Block) -> None:
        first = self.opts.reference_seeds
        central = self.central_task(
            self.base(block), self.sweep.root / RUNS / block.slug, block.slug
        )
        if central is not None:
            task = [*central, *self.chosen.get((block.slug, CENTRAL), [])]
            say(f"running the centralized baseline [{block.slug}]")
            multirun(
                [*task, self.seeds(first)],
                self.hydra_args(),
                self.sweep.root / REFERENCES / block.slug / CENTRAL,
                task,
            )
        from fedlearn.data.partition import IID as IID_TARGETS

        if self.composed(self.base(block)).partitioner._target_ in IID_TARGETS:
            return  # an IID block is its own IID reference
        for strategy in self.sweep.strategies:
            task = [
                f"strategy={strategy}",
                *_without(self.base(block), ("partitioner",)),
                "partitioner=iid",
                *self.chosen.get((block.slug, strategy), []),
            ]
            say(f"running {strategy} [{block.slug}] on an IID partition (reference)")
            multirun(
                [*task, *self.sweep.strategy_sweeps, self.seeds(first)],
                self.hydra_args(),
                self.sweep.root / REFERENCES / block.slug / IID / strategy,
                task,
            )

    def run(self) -> None:
        """Every step, in order."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Hydra's sweeper says enough
        self.prepare()
        for block in self.sweep.blocks:
            if self.sweep.tuned:
                for s in self.sweep.strategies:
                    task = [f"strategy={s}", *self.trial_base(block)]
                    self.chosen[(block.slug, s)] = self.tune(block, s, task)
                trials_dir = self.sweep.root / TUNING / block.slug
                central = self.central_task(self.trial_base(block), trials_dir, block.slug)
                if central is not None:
                    self.chosen[(block.slug, CENTRAL)] = self.tune(block, CENTRAL, central)
            for s in self.sweep.strategies:
                self.evaluate(block, s)
            self.references(block)


def run_sweep(argv: list[str]) -> Path:
    """Parse a ``fedlearn-compare`` command line and run it; returns the sweep folder."""
    sweep = plan_module.parse(argv)
    try:
        Driver(sweep).run()
    except KeyboardInterrupt:
        say(f"interrupted; the same command continues it (finished runs in {sweep.root} are kept)")
        raise KeyboardInterrupt from None  # a plain one: no single run folder to resume
    return sweep.root
