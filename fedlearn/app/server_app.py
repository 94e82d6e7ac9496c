"""fedlearn's Flower ServerApp: the round loop, centralized evaluation and the run folder.

The FL algorithm is the Flower strategy; this module only drives it. It calls
the strategy's four hooks in the order ``Strategy.start`` does, but owns the
loop itself because fedlearn needs what ``start`` cannot give: resuming at
round ``k+1`` from a checkpoint with the round numbers intact, a metrics line
and checkpoint written as each round ends (nothing is lost on a crash), and a
clean stop when fewer clients succeed than the strategy needs.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedlearn import records
from fedlearn.app.arrays import cast_like, to_state_dict
from fedlearn.app.client_strategies import settle_state
from fedlearn.app.screening import ScreenPolicy
from fedlearn.app.tracking import RoundStats, TrackingGrid, non_finite_key
from fedlearn.runtime.base import ClientStateStore

log = logging.getLogger("fedlearn")

EvaluateFn = Callable[[int, ArrayRecord], dict[str, dict[str, float]]]


@dataclass
class ServerSetup:
    """Everything the ServerApp needs, built by the entry point from the config.

    Attributes
    ----------
    strategy : Strategy
        A built Flower strategy (possibly wrapped, e.g. by central DP).
    initial_arrays : ArrayRecord
        The seeded initial model.
    num_rounds : int
        Rounds to run in total (a resumed run continues up to this number).
    run_dir : Path
        The run folder.
    train_config, evaluate_config : dict
        Scalars put in every train / evaluate message's ConfigRecord.
    evaluate_fn : callable, optional
        Centralized evaluation ``(round, arrays) -> {set: {"loss", "accuracy"}}``
        for the sets ``validation`` and ``test`` (:mod:`fedlearn.app.central`).
    min_train_replies : int
        Fewer successful train replies than this stops the run cleanly.
    round_timeout : float
        Seconds to wait for replies in one exchange.
    checkpoint_every : int
        Rounds between checkpoints (0: never); the last round is always saved.
    resume : bool
        Continue from the run folder's latest checkpoint.
    seed : int
        Seeds client sampling per round (with the round number).
    max_update_norm : float or None
        A train reply whose model differs from the one sent by more than this (L2)
        is refused before aggregation (:mod:`fedlearn.app.screening`); None: no bound.
    on_round : callable, optional
        Called with each metrics line (progress display).
    """

    strategy: Strategy
    initial_arrays: ArrayRecord
    num_rounds: int
    run_dir: Path
    train_config: dict[str, Any] = field(default_factory=dict)
    evaluate_config: dict[str, Any] = field(default_factory=dict)
    evaluate_fn: EvaluateFn | None = None
    min_train_replies: int = 1
    round_timeout: float = 600.0
    checkpoint_every: int = 1
    resume: bool = False
    seed: int = 0
    max_update_norm: float | None = None
    on_round: Callable[[dict[str, Any]], None] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    final_arrays: ArrayRecord | None = None


def seed_round(seed: int, server_round: int) -> None:
    """Reseed the RNGs strategies use (``random.sample``, numpy noise) for this round.

    Seeding per round, not once, is what makes a resumed run sample the same
    clients as an uninterrupted one.
    """
    s = (seed * 1_000_003 + server_round) % (2**32)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """A strategy's instance attributes (server optimizer moments, momentum, ...)."""
    return dict(vars(strategy))


def _mean_metrics(record: MetricRecord | None) -> dict[str, Any]:
    return dict(record) if record is not None else {}


def _store(grid: Grid) -> ClientStateStore | None:
    """The runtime's Grid (under fedlearn's TrackingGrid) when it holds client state."""
    inner = getattr(grid, "inner", grid)
    return inner if isinstance(inner, ClientStateStore) else None


def _settle_held_states(grid: TrackingGrid) -> None:
    """Where the server holds its nodes' states (in-process, Ray), settle each pending
    state of this round now, so a checkpoint holds none: nodes renumbered by a restart
    (Ray's) could not be told later. Other runtimes' clients are told in messages."""
    store = _store(grid)
    if store is None:
        return
    states = store.client_states()
    key_of = getattr(store, "keys", {})  # node id -> state key, where they differ (Ray's)
    for node, (server_round, aggregated) in grid.settled().items():
        state = states.get(key_of.get(node, str(node)))
        if state is not None:
            settle_state(state, server_round, aggregated)


def _state(setup: ServerSetup, grid: TrackingGrid, arrays: ArrayRecord) -> dict[str, Any]:
    state = {"arrays": arrays, "strategy": strategy_state(setup.strategy)}
    state["ledger"] = grid.ledger_state()  # what clients are told of their last updates
    if (store := _store(grid)) is not None:  # every node's Context.state
        state["clients"] = store.client_states()
    return state


def _restore(setup: ServerSetup, grid: TrackingGrid) -> tuple[ArrayRecord, int]:
    ckpt = records.load_checkpoint(setup.run_dir) if setup.resume else None
    if ckpt is None:
        return setup.initial_arrays, 1
    vars(setup.strategy).update(ckpt["strategy"])
    # Clients are told of the rounds up to the checkpoint; a later round's state waits.
    grid.ledger = dict(ckpt.get("ledger", {}))
    if "clients" in ckpt and (store := _store(grid)) is not None:
        store.load_client_states(ckpt["clients"])
    records.truncate_metrics(setup.run_dir, ckpt["round"])
    log.info("resuming %s after round %d", setup.run_dir, ckpt["round"])
    return ckpt["arrays"], ckpt["round"] + 1


def _best(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the best validation accuracy (the earliest on ties; trained rounds
    first) and its central entries. Chosen on validation only: test is only reported."""
    scored = [m for m in lines if (m.get("validation") or {}).get("accuracy") is not None]
    scored = [m for m in scored if m.get("round", 0) > 0] or scored
    if not scored:
        return {}
    best = max(scored, key=lambda m: m["validation"]["accuracy"])
    return {"round": best["round"], **{k: best[k] for k in records.EVAL_SETS if k in best}}


def screen_policy(setup: ServerSetup) -> ScreenPolicy:
    """What a reply must satisfy for this strategy (its weighting metric, its model record)."""
    inner = getattr(setup.strategy, "strategy", setup.strategy)  # e.g. inside central DP
    return ScreenPolicy(
        max_update_norm=setup.max_update_norm,
        weight_key=getattr(inner, "weighted_by_key", None),
        model_key=getattr(inner, "arrayrecord_key", "arrays"),
    )


def _non_finite(value: Any, path: str, depth: int = 0) -> str | None:
    """Where a strategy's state (arrays, dicts and lists of them, a wrapped strategy)
    holds NaN or Inf, or None."""
    if isinstance(value, np.ndarray):
        floating = np.issubdtype(value.dtype, np.inexact)
        return path if floating and not np.isfinite(value).all() else None
    if isinstance(value, ArrayRecord):
        return non_finite_key(RecordDict({path: value}))
    if depth > 3:
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif isinstance(value, Strategy):
        items = vars(value).items()
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}", depth + 1)
        if found is not None:
            return found
    return None


def aggregate(
    strategy: Strategy, rnd: int, replies: list
) -> tuple[ArrayRecord | None, MetricRecord | None, str | None]:
    """``strategy.aggregate_train``, and why its result must not be applied (or None).

    An aggregation that leaves NaN or Inf in the model or in the strategy's own state
    (an overflow, e.g. of a server optimizer's second moment) is never applied: the
    strategy's state is put back as it was before the call, so the round changes
    nothing and the next round starts from the same model and state.
    """
    saved = copy.deepcopy(strategy_state(strategy))
    arrays, metrics = strategy.aggregate_train(rnd, replies)
    bad = _non_finite(arrays, "arrays") or _non_finite(strategy, "strategy")
    if bad is None:
        return arrays, metrics, None
    vars(strategy).clear()
    vars(strategy).update(saved)
    return arrays, metrics, f"aggregate not applied: non-finite values in {bad}"


def _summary(setup: ServerSetup, status: str, error: str | None, wall: float) -> dict[str, Any]:
    lines = records.read_metrics(setup.run_dir)
    evaluated = [m for m in lines if any(k in m for k in records.EVAL_SETS)]
    last = evaluated[-1] if evaluated else {}
    final = {k: last[k] for k in records.EVAL_SETS if k in last}
    rounds = [m for m in lines if m.get("round", 0) > 0]
    return {
        "status": status,
        "rounds_completed": max((m["round"] for m in rounds), default=0),
        "num_rounds": setup.num_rounds,
        "final": final,
        "best": _best(lines),
        "wall_seconds": wall,
        "round_seconds": sum(m.get("seconds", 0.0) for m in rounds),
        "strategy": type(setup.strategy).__name__,
        "seed": setup.seed,
        "error": error,
        "bytes_sent": sum(m.get("bytes_sent", 0) for m in rounds),
        "bytes_received": sum(m.get("bytes_received", 0) for m in rounds),
        "train_steps": sum(m.get("train_steps", 0) for m in rounds),
    }


def _train_steps(replies: Any) -> int:
    """Local optimizer steps of a round's successful train replies, summed."""
    steps = 0
    for msg in replies:
        if not msg.has_error() and "metrics" in msg.content:
            steps += int(msg.content["metrics"].get("num-steps", 0))
    return steps


def run_rounds(setup: ServerSetup, grid: Grid) -> dict[str, Any]:
    """Run the federated rounds on ``grid``; write the run folder; return the summary."""
    t_start = time.perf_counter()
    grid = TrackingGrid(grid, screen_policy(setup))
    strategy = setup.strategy
    arrays, first = _restore(setup, grid)
    if first == 1 and setup.evaluate_fn is not None:
        records.truncate_metrics(setup.run_dir, -1)
        records.append_metrics(setup.run_dir, {"round": 0, **setup.evaluate_fn(0, arrays)})
    status, error = "completed", None
    rnd = first
    try:
        for rnd in range(first, setup.num_rounds + 1):
            seed_round(setup.seed, rnd)
            t0 = time.perf_counter()
            msgs = strategy.configure_train(rnd, arrays, ConfigRecord(setup.train_config), grid)
            replies = grid.send_and_receive(msgs, timeout=setup.round_timeout)
            train, train_steps = grid.last, _train_steps(replies)
            new_arrays, train_metrics, skipped = aggregate(strategy, rnd, list(replies))
            stop = new_arrays is None or train.succeeded < setup.min_train_replies
            grid.settle(rnd, applied=not stop and skipped is None)
            if stop:
                status = "stopped"
                error = (
                    f"round {rnd}: {train.succeeded} of {train.sampled} clients succeeded;"
                    f" the strategy needs at least {setup.min_train_replies}"
                )
                if train.first_error:
                    error += f" (first failure: {train.first_error})"
                log.error("stopping: %s", error)
                break
            eval_metrics, evaluate = None, RoundStats()
            if skipped is None:
                arrays = cast_like(new_arrays, setup.initial_arrays)  # the model's own dtypes
                msgs = strategy.configure_evaluate(
                    rnd, arrays, ConfigRecord(setup.evaluate_config), grid
                )
                replies = grid.send_and_receive(msgs, timeout=setup.round_timeout)
                evaluate = grid.last
                eval_metrics = strategy.aggregate_evaluate(rnd, replies)
            else:  # the model and the strategy stay as they were; so do the clients' states
                log.warning("round %d: %s", rnd, skipped)
            line = {
                "round": rnd,
                "sampled": train.sampled,
                "succeeded": train.succeeded,
                "failed": train.failed,
                "train": _mean_metrics(train_metrics),
                "train_steps": train_steps,
                "evaluate": _mean_metrics(eval_metrics),
                "eval_failed": evaluate.failed,
                "bytes_sent": train.bytes_sent + evaluate.bytes_sent,
                "bytes_received": train.bytes_received + evaluate.bytes_received,
            }
            if train.refused:
                line["refused"] = dict(train.refused)
            if skipped is not None:
                line["skipped"] = skipped
            if setup.evaluate_fn is not None:
                line.update(setup.evaluate_fn(rnd, arrays))
            line["seconds"] = time.perf_counter() - t0
            records.append_metrics(setup.run_dir, line)
            last = rnd == setup.num_rounds
            _settle_held_states(grid)
            if setup.checkpoint_every and (rnd % setup.checkpoint_every == 0 or last):
                records.save_checkpoint(setup.run_dir, rnd, _state(setup, grid, arrays))
            grid.publish()  # the round is over: clients may commit what it aggregated
            if setup.on_round is not None:
                setup.on_round(line)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM in a console script
        status, error = "interrupted", f"interrupted in round {rnd}"
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        setup.final_arrays = arrays
        setup.result = _summary(setup, status, error, time.perf_counter() - t_start)
        records.save_model(setup.run_dir, to_state_dict(arrays))
        records.write_json(setup.run_dir / records.RESULT, setup.result)
    return setup.result


def make_server_app(setup: ServerSetup) -> ServerApp:
    """A Flower ServerApp whose ``main`` runs :func:`run_rounds` with ``setup``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:  # noqa: ARG001 - Flower's signature
        run_rounds(setup, grid)

    return app
