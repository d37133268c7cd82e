"""The trainer: `fit(model, train, test, config, callbacks)` and `compare(...)` over the pure step.

It drives `state, metrics = step(state, batch)` through the run's phases (warm-up and
cool-down epochs on all data, selective epochs in between), draws every batch with
`sampling` (pure in seed, epoch, position and state), gathers metrics every `log_every`
steps in one transfer, evaluates at each epoch end and hands the edges (checkpoints,
tracking, progress) to callbacks. With a time or FLOP budget the learning-rate schedule's
horizon is re-planned as the budget is spent, so every strategy anneals fully at the budget.

The loop's position, clock, skip counters and history live in the state TensorDict
("loop", "clock", "history"), so resuming means loading the state:
`fit(model, train, test, config, state=checkpoint.load(path)[0])`.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from tensordict import TensorDict
from torch import nn

from functional_ast.data import images as fdata
from functional_ast.core import distributed
from functional_ast.core import optim
from functional_ast.train.reference import ReferenceServices
from functional_ast.core import sampling
from functional_ast.core.selection import all_data
from functional_ast.core.state import check_compatible
from functional_ast.core.work import estimate_joules
from functional_ast.train.config import ConfigError, TrainConfig
from functional_ast.train.plan import NEVER, Plan, build_optimizer, build_strategy, remaining_steps, strategy_context
from functional_ast.train.loop import Skips, check_skips, evaluate, gather_metrics
from functional_ast.core.task import Task
from functional_ast.tasks import image_classification
from functional_ast.core.step import accepts_channels_last, init_state, make_eval_step, make_train_step

# Per-step metrics kept in the state's history (for plots and summaries); every metric still goes to callbacks.
STEP_KEYS = ("loss", "activation_rate", "n_trained", "threshold", "rate_ema", "step_saved_pct", "saved_pct")
# Fields of a per-epoch record, in the column order of the state's history table.
EPOCH_KEYS = ("epoch", "steps", "all_data", "test_accuracy", "test_loss", "train_time_s", "eval_time_s",
              "epoch_activation_rate", "epoch_saved_pct", "saved_pct", "flops_spent", "flops_full",
              "samples_trained", "samples_scored")
UNKNOWN = -1.0  # a cost per step not measured yet (not NaN: states must compare equal leaf by leaf)


# --------------------------------------------------------------------------- data and results


@dataclass
class Data:
    """Train and test sets on the device, with the normalisation computed from the train set."""

    train: fdata.LabelledImages
    test: fdata.LabelledImages
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device

    @classmethod
    def prepare(cls, train, test, device=None, label_noise: float = 0.0, seed: int = 0) -> "Data":
        """From LabelledImages or (images, labels) pairs; `label_noise` replaces a seeded share of train labels."""
        train, test = _labelled(train, "train"), _labelled(test, "test")
        if label_noise:
            train = fdata.with_label_noise(train, label_noise, seed)
        device = torch.device(device) if device is not None else torch.device("cpu")
        mean, std = fdata.channel_stats(train.data["image"])
        return cls(fdata.LabelledImages(train.data.to(device), train.classes),
                   fdata.LabelledImages(test.data.to(device), test.classes), mean.to(device), std.to(device), device)


def _labelled(ds, name: str) -> fdata.LabelledImages:
    if isinstance(ds, fdata.LabelledImages):
        return ds
    if isinstance(ds, (tuple, list)) and len(ds) == 2:
        return fdata.from_tensors(*ds)
    raise ConfigError(f"{name} data must be a data.LabelledImages or an (images, labels) pair, got {type(ds).__name__}")


@dataclass
class History:
    """Per-step series (step -> value per metric) and per-epoch records of one run."""

    steps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pairs = self.steps.get(key, [])
        return [s for s, _ in pairs], [v for _, v in pairs]

    def to_json(self) -> dict:
        return {"steps": {k: [list(p) for p in v] for k, v in self.steps.items()}, "epochs": self.epochs}

    @classmethod
    def from_json(cls, data: dict) -> "History":
        return cls({k: [tuple(p) for p in v] for k, v in data["steps"].items()}, list(data["epochs"]))

    @classmethod
    def from_state(cls, state: TensorDict) -> "History":
        table = state["history", "epochs"]
        rows = table[~table[:, 0].isnan()].tolist()
        epochs = [dict(zip(EPOCH_KEYS, row)) for row in rows]
        for record in epochs:
            for key in ("epoch", "steps", "flops_spent", "flops_full", "samples_trained", "samples_scored"):
                record[key] = int(record[key])
        steps = {}
        for key, values in state["history", "steps"].items():
            known = (~values.isnan()).nonzero()[:, 0]
            if len(known):
                steps[key] = list(zip(known.tolist(), values[known].tolist()))
        return cls(steps, epochs)


@dataclass
class Result:
    """What a run returns: its summary (plain numbers and strings), history and final state."""

    summary: dict
    history: History
    state: TensorDict | None = None


# --------------------------------------------------------------------------- callbacks


class Callback:
    """The trainer's edges. Every hook is optional; the clock is paused while hooks run.

    on_start(run) before the first step (of this process: also after a resume); on_metrics(run, first_step,
    chunk) every `log_every` steps; on_epoch_end(run, record); on_safe_point(run) every `safe_point_every`
    steps and at each epoch end, when the state (run.state) holds everything to resume from;
    on_end(run, result); on_failure(run, error) when training stops on an error.
    """

    def on_start(self, run: "Run") -> None: ...
    def on_metrics(self, run: "Run", first_step: int, chunk: dict[str, list[float]]) -> None: ...
    def on_epoch_end(self, run: "Run", record: dict) -> None: ...
    def on_safe_point(self, run: "Run") -> None: ...
    def on_end(self, run: "Run", result: Result) -> None: ...
    def on_failure(self, run: "Run", error: BaseException) -> None: ...


# --------------------------------------------------------------------------- loop state


def init_loop(plan: Plan, device, budgeted: bool = False) -> TensorDict:
    """The loop's part of the state: position, clock, skip counters and history, all tensors. Under a budget
    the cool-down starts when only its cost is left (decided as the budget is spent), not at a planned epoch."""
    i64 = dict(dtype=torch.int64, device=device)
    f64 = dict(dtype=torch.float64, device=device)
    zero_counters = TensorDict({k: torch.zeros((), **i64) for k in
                                ("flops_spent", "flops_full", "samples_seen", "samples_scored", "samples_trained")})
    loop = TensorDict(epoch=torch.zeros((), **i64), batch=torch.zeros((), **i64),
                      cooldown_from=torch.tensor(NEVER if budgeted else plan.first_cooldown_epoch(), **i64),
                      finished=torch.zeros((), dtype=torch.bool, device=device),
                      skipped_in_a_row=torch.zeros((), **i64), skipped_total=torch.zeros((), **i64),
                      warned=torch.zeros((), dtype=torch.bool, device=device), epoch_start=zero_counters,
                      cost_all_data=torch.full((), UNKNOWN, **f64), cost_selective=torch.full((), UNKNOWN, **f64))
    clock = TensorDict(train_time=torch.zeros((), **f64), eval_time=torch.zeros((), **f64),
                       joules=torch.zeros((), **f64))
    capacity = max(plan.total_steps, 1)
    history = TensorDict(epochs=torch.full((max(plan.epochs, 1), len(EPOCH_KEYS)), math.nan, **f64),
                         steps=TensorDict({k: torch.full((capacity,), math.nan, **f64) for k in STEP_KEYS}))
    return TensorDict(loop=loop, clock=clock, history=history)


def _grown(values: torch.Tensor, needed: int) -> torch.Tensor:
    """`values` padded with NaN rows to hold `needed` rows (doubling), or itself."""
    if needed <= values.shape[0]:
        return values
    pad = torch.full((max(needed, 2 * values.shape[0]) - values.shape[0], *values.shape[1:]), math.nan,
                     dtype=values.dtype, device=values.device)
    return torch.cat([values, pad])


def _with(state: TensorDict, **parts: dict) -> TensorDict:
    """A new state whose sub-TensorDicts named in `parts` have the given leaves replaced; nothing mutated."""
    out = dict(state.items())
    for name, leaves in parts.items():
        sub = dict(state[name].items())
        sub.update(leaves)
        out[name] = TensorDict(sub, batch_size=state[name].batch_size, device=state[name].device)
    return TensorDict(out, batch_size=state.batch_size, device=state.device)


def _replace(state: TensorDict, **leaves) -> TensorDict:
    """A new state with top-level entries replaced; nothing mutated."""
    return TensorDict(dict(state.items(), **leaves), batch_size=state.batch_size, device=state.device)


def _counters(state: TensorDict) -> dict[str, int]:
    return {k: int(v) for k, v in state["work"].items()}


def _saved(after: dict[str, int], before: dict[str, int] | None = None) -> float:
    before = before or {"flops_spent": 0, "flops_full": 0}
    full = after["flops_full"] - before["flops_full"]
    return 100.0 * (1 - (after["flops_spent"] - before["flops_spent"]) / full) if full else 0.0


class _Clock:
    """Train wall-clock of one run: counts between start() and stop(); `paused()` excludes a block."""

    def __init__(self, spent: float = 0.0):
        self.spent, self._start = spent, None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        self.spent, self._start = self.now(), None

    def now(self) -> float:
        return self.spent + (time.perf_counter() - self._start if self._start is not None else 0.0)

    @contextmanager
    def paused(self):
        running = self._start is not None
        if running:
            self.stop()
        try:
            yield
        finally:
            if running:
                self.start()


# --------------------------------------------------------------------------- one run


class Run:
    """One strategy's training, built once from (model, data, config): its steps, plan and current state.

    `advance()` trains up to the end of the current epoch (or for `seconds` of train time), so several runs can
    take turns (`compare`); `finish()` returns the Result. `state` is the whole truth: position, clock and
    history included.
    """

    def __init__(self, model: nn.Module | Callable[[], nn.Module], data: Data, config: TrainConfig, *,
                 name: str | None = None, callbacks: Sequence[Callback] = (), state: TensorDict | None = None,
                 log_every: int = 25, safe_point_every: int = 200, eval_batch_size: int = 512,
                 eval_every: float | None = None, collective: distributed.Collective = distributed.LOCAL, meter=None,
                 task: Task | None = None):
        self.config, self.data, self.collective = config, data, collective
        self.task = task or image_classification()
        self.eval_every = eval_every  # seconds of train time between evaluations (None: every epoch)
        self.callbacks = list(callbacks)
        self.log_every, self.safe_point_every, self.eval_batch_size = log_every, safe_point_every, eval_batch_size
        self.meter = meter
        torch.manual_seed(config.seed)
        self.model = model() if callable(model) and not isinstance(model, nn.Module) else model
        self.name = name or config.strategy
        self.plan = Plan.of(config, len(data.train))
        self.rule = config.rule
        self.context = strategy_context(config, self.plan, tuple(data.train.data["image"].shape[1:]),
                                        len(data.train.classes), self.task)
        self.strategy = build_strategy(config, self.context)
        self.optimizer = build_optimizer(config, self.plan)
        channels_last = config.channels_last(data.device) and (  # "auto" only where the model runs on it
            config.memory_format == "channels_last"
            or accepts_channels_last(self.model, tuple(data.train.data["image"].shape[1:])))
        common = dict(compile=config.compile, collective=collective, channels_last=channels_last)
        self.all_data_step = make_train_step(self.model, self.task, self.optimizer,
                                             all_data(self.strategy), **common)
        if self.strategy.index_only or self.strategy.sampling is not None:  # trains what sampling.draw selected
            self.selective_step = make_train_step(self.model, self.task, self.optimizer,
                                                  all_data(self.strategy),
                                                  seen_per_step=self.plan.pool_size, **common)
        else:  # scores the pool and selects inside the step
            self.selective_step = make_train_step(self.model, self.task, self.optimizer, self.strategy,
                                                  score_chunk_size=config.batch_size, **common)
        self.eval_step = make_eval_step(self.model, self.task, channels_last=channels_last)
        fresh = init_state(self.model, self.optimizer, self.strategy, key=config.seed, device=data.device)
        fresh.update(init_loop(self.plan, data.device, budgeted=config.budget is not None))
        self.template = fresh
        if state is not None:
            check_compatible(state.exclude("history"), fresh.exclude("history"), "the state to resume")
            state = state.to(data.device)
        self.state = state if state is not None else fresh
        self.clock = _Clock(float(self.state["clock", "train_time"]))
        self._order: tuple[int, torch.Tensor] | None = None
        self._started = False
        self._cooldown_cost_s: float | None = None  # the state's estimate as a Python float (no per-step sync)

    # -- position ---------------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self.state["loop", "epoch"])

    @property
    def finished(self) -> bool:
        return bool(self.state["loop", "finished"])

    def _cooldown_from(self) -> int:
        return int(self.state["loop", "cooldown_from"])

    def budget_used(self) -> float:
        kind, _ = self.config.budget
        return self.clock.now() if kind == "time" else float(self.state["work", "flops_spent"])

    def _hooks(self, name: str, *args) -> None:
        with self.clock.paused():
            for cb in self.callbacks:
                getattr(cb, name)(self, *args)

    def start(self) -> None:
        """Call the callbacks' on_start (once per process); the first `advance` does it if needed."""
        if not self._started:
            self._started = True
            if self.rule.prepare is not None and self.rule.needs_prepare(self.state["selector"]):
                self._prepare_rule()
            if self.config.budget is not None:
                self._used_at_flush = self.budget_used()
                if float(self.state["loop", "cost_all_data"]) == UNKNOWN:
                    self.probe_costs()
            self._hooks("on_start")

    def _prepare_rule(self) -> None:
        """Run the rule's `prepare` (rho_loss's reference models) and charge its wall-clock and FLOPs to this run's
        clock and work counters, so a budget pays for it."""
        services = ReferenceServices(self.model, self.data, self.config, train_full, task=self.task)
        start = time.perf_counter()
        selector, flops = self.rule.prepare(self.state["selector"], self.context,
                                            self.rule.make_options(self.config.options), services)
        self.clock.spent += time.perf_counter() - start
        self.state = _replace(self.state, selector=selector)
        self.state = _with(self.state, work={"flops_spent": self.state["work", "flops_spent"] + flops},
                           clock={"train_time": torch.tensor(self.clock.now(), dtype=torch.float64)})

    # -- training ---------------------------------------------------------------------------------------
    def advance(self, seconds: float | None = None) -> None:
        """Train from the current position to the end of this epoch (evaluating it), or until `seconds` more
        of train time have passed, or the budget is spent; no-op once finished."""
        self.start()
        if self.finished:
            return
        epoch, cooldown_from = self.epoch, self._cooldown_from()
        if self._epoch_cap_reached(epoch):
            self._finish_loop()
            return
        all_data = self.plan.all_data(epoch, cooldown_from)
        first_batch = int(self.state["loop", "batch"])
        if first_batch == 0 and self._cooldown_due(epoch, all_data, starts_at=epoch):  # this epoch cools down
            cooldown_from, all_data = epoch, True
        if first_batch == 0:
            self.state = _with(self.state, loop={"epoch_start": self.state["work"].clone()})
        n_batches = self.plan.steps_in(epoch, cooldown_from)
        size = self.plan.batch_size if all_data else self.plan.pool_size
        step = self.all_data_step if all_data else self.selective_step
        order = self._epoch_order(epoch)
        until = None if seconds is None else self.clock.now() + seconds
        pending, chunk_start, b = [], int(self.state["step"]), first_batch
        energy_start = self.meter.read() if self.meter else 0.0
        epoch_over = False
        self.clock.start()
        try:
            while True:
                if b >= n_batches:
                    epoch_over = True
                    break
                if self._budget_spent() or self._cooldown_due(epoch, all_data):
                    epoch_over = True
                    break
                if until is not None and self.clock.now() >= until:
                    break
                self.state, batch, info = self._draw_batch(self.state, order, epoch, b, size, all_data)
                self.state, metrics = step(self.state, batch)
                if info is not None:  # an index-only selection's metrics (threshold, rate EMA, ...)
                    metrics = TensorDict(dict(info.items(), **dict(metrics.items())), device=metrics.device)
                pending.append(metrics)
                b += 1
                global_step = chunk_start + len(pending)
                if len(pending) >= self.log_every:
                    chunk_start = self._flush(pending, chunk_start, all_data, b)
                    pending = []
                if self.safe_point_every and global_step % self.safe_point_every == 0:
                    if pending:
                        chunk_start = self._flush(pending, chunk_start, all_data, b)
                        pending = []
                    self._set_position(epoch, b)
                    self._hooks("on_safe_point")
            if pending:
                self._flush(pending, chunk_start, all_data, b)
            float(self.state["step"])  # wait for queued device work before reading the clock
        except BaseException as error:  # a diverged run, Ctrl-C, a bug: save what is good, tell the edges
            self.clock.stop()
            self._set_position(epoch, b)
            self._hooks("on_failure", error)
            raise
        finally:
            self.clock.stop()
        if self.meter:
            joules = float(self.state["clock", "joules"]) + self.meter.joules(energy_start, self.meter.read())
            self.state = _with(self.state, clock={"joules": torch.tensor(joules, dtype=torch.float64)})
        self._set_position(epoch, b)
        if epoch_over:
            self._end_epoch(epoch, all_data)

    def _draw_batch(self, state: TensorDict, order: torch.Tensor, epoch: int, b: int, size: int, all_data: bool
                    ) -> tuple[TensorDict, TensorDict, TensorDict | None]:
        """Batch `b` of `epoch`: draw its indices (sampling.draw), gather and augment those samples. Returns the
        state (with the selector an index-only selection moved), the batch and that selection's metrics."""
        drawn = sampling.draw(self.strategy, state["selector"], order, batch=b, size=size, seed=self.config.seed,
                              epoch=epoch, all_data=all_data)
        generator = fdata.epoch_generator(self.config.seed, epoch, b) if self.config.augment else None
        batch = fdata.batch_at(self.data.train, drawn.index, generator=generator, mean=self.data.mean,
                               std=self.data.std, device=self.data.device, transform=self.task.transform)
        if drawn.weight is not None:
            batch["weight"] = drawn.weight.to(self.data.device)
        if drawn.selector is not None:
            state = _replace(state, selector=drawn.selector)
        return state, batch, drawn.info

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """The epoch's shuffled order, moved to the data's device once per epoch: a subset step's selected
        positions then index it where they were computed, with no device-to-host copy (a GPU sync) per step."""
        if self._order is None or self._order[0] != epoch:
            order = sampling.epoch_order(self.plan.num_samples, self.config.seed, epoch)
            self._order = (epoch, order.to(self.data.device))
        return self._order[1]

    def _epoch_cap_reached(self, epoch: int) -> bool:
        return self.config.budget is None and epoch >= self.plan.epochs

    def _budget_spent(self) -> bool:
        budget = self.config.budget
        return budget is not None and self.budget_used() >= budget[1]

    def _cooldown_due(self, epoch: int, all_data: bool, starts_at: int | None = None) -> bool:
        """Under a budget, a selective epoch ends early once only the cool-down epochs' cost is left; the
        cool-down then starts at `starts_at` (default: the next epoch)."""
        if self.config.budget is None or all_data or not self.plan.cooldown_epochs:
            return False
        left = self.config.budget[1] - self.budget_used()
        if left > self._cooldown_cost():
            return False
        start = epoch + 1 if starts_at is None else starts_at
        self.state = _with(self.state, loop={"cooldown_from": torch.tensor(start, dtype=torch.int64)})
        return True

    def _cooldown_cost(self) -> float:
        """The cool-down's cost at the state's cost per all-data step, read from the state once per estimate
        (it is checked every step; on a GPU each read would wait for the device)."""
        if self._cooldown_cost_s is None:
            per_step = float(self.state["loop", "cost_all_data"])
            self._cooldown_cost_s = self.plan.cooldown_epochs * self.plan.all_data_steps * per_step
        return self._cooldown_cost_s

    def _set_position(self, epoch: int, batch: int) -> None:
        self.state = _with(self.state, loop={"epoch": torch.tensor(epoch), "batch": torch.tensor(batch)},
                           clock={"train_time": torch.tensor(self.clock.now(), dtype=torch.float64)})

    def _flush(self, pending: list[TensorDict], chunk_start: int, all_data: bool, batch: int) -> int:
        """Gather pending metrics (one transfer), run the guard, keep the history, call on_metrics, re-plan."""
        loop = self.state["loop"]
        chunk = gather_metrics(pending)
        skips = Skips(int(loop["skipped_in_a_row"]), int(loop["skipped_total"]), bool(loop["warned"]))
        try:
            skips = check_skips(skips, chunk, chunk_start)
        finally:
            self.state = _with(self.state, loop={"skipped_in_a_row": torch.tensor(skips.in_a_row),
                                                 "skipped_total": torch.tensor(skips.total),
                                                 "warned": torch.tensor(skips.warned)})
        end = chunk_start + len(pending)
        steps = {}
        for key, values in self.state["history", "steps"].items():
            values = _grown(values, end)
            if key in chunk:
                values = values.index_put((torch.arange(chunk_start, end, device=values.device),),
                                          torch.tensor(chunk[key], dtype=values.dtype, device=values.device))
            steps[key] = values
        self.state = _with(self.state, history={"steps": TensorDict(steps)})
        self._hooks("on_metrics", chunk_start, chunk)
        if self.config.budget is not None:
            self._replan(len(pending), all_data, batch)
        return end

    # -- budgets ----------------------------------------------------------------------------------------
    def probe_costs(self, steps: int = 3) -> None:
        """Cost per step (seconds or FLOPs) of each phase, from a few steps on a throwaway copy of the state
        (steps are pure); sets the first horizon."""
        kind, _ = self.config.budget
        costs = {}
        for phase, all_data in (("cost_all_data", True), ("cost_selective", False)):
            if not all_data and not self.plan.gated:
                costs[phase] = costs["cost_all_data"]
                continue
            step = self.all_data_step if all_data else self.selective_step
            size = self.plan.batch_size if all_data else self.plan.pool_size
            state, samples = self.state, []
            order = self._epoch_order(0)
            for b in range(steps + 1):
                position = b % (self.plan.all_data_steps if all_data else self.plan.selective_steps)
                state, batch, _ = self._draw_batch(state, order, 0, position, size, all_data)
                flops = float(state["work", "flops_spent"])
                start = time.perf_counter()
                state, metrics = step(state, batch)
                float(metrics["loss"])
                if b:  # the first call measures FLOPs and warms caches
                    samples.append(time.perf_counter() - start if kind == "time"
                                   else float(state["work", "flops_spent"]) - flops)
            costs[phase] = sorted(samples)[len(samples) // 2]
        self.state = _with(self.state, loop={k: torch.tensor(v, dtype=torch.float64) for k, v in costs.items()})
        self._cooldown_cost_s = None
        self._replan(0, True)

    def _replan(self, steps_just_done: int, all_data: bool, batch: int | None = None) -> None:
        """Re-estimate the steps the rest of the budget affords from (epoch, batch) and set the schedule's
        horizon to the total."""
        _, budget = self.config.budget
        loop = self.state["loop"]
        used = self.budget_used()
        done = int(self.state["step"])
        phase = "cost_all_data" if all_data else "cost_selective"
        if steps_just_done:  # running mean of the measured cost per step of this phase
            measured = (used - self._used_at_flush) / steps_just_done
            previous = float(loop[phase])
            cost = measured if previous == UNKNOWN else 0.7 * previous + 0.3 * measured
            self.state = _with(self.state, loop={phase: torch.tensor(cost, dtype=torch.float64)})
            self._cooldown_cost_s = None
        self._used_at_flush = used
        left = max(0.0, budget - used)
        batch = int(self.state["loop", "batch"]) if batch is None else batch
        remaining = remaining_steps(self.plan, self.epoch, batch, left,
                                    float(self.state["loop", "cost_all_data"]),
                                    float(self.state["loop", "cost_selective"]))
        horizon = max(done + 1, done + int(round(remaining)))
        self.state = _replace(self.state, opt=optim.set_horizon(self.state["opt"], horizon))

    # -- epoch ends -------------------------------------------------------------------------------------
    def _end_epoch(self, epoch: int, all_data: bool) -> None:
        state = self.state
        finished = self._budget_spent() or self._epoch_cap_reached(epoch + 1)
        before = {k: int(v) for k, v in state["loop", "epoch_start"].items()}
        after = _counters(state)
        eval_time = float(state["clock", "eval_time"])
        train_time = float(state["clock", "train_time"])
        record = None
        if self.collective.is_main:  # rank 0 evaluates and records
            test = {"accuracy": math.nan, "loss": math.nan}
            if finished or self._evaluation_due(train_time):
                start = time.perf_counter()
                test = evaluate(self.eval_step, state, fdata.iterate_batches(
                    self.data.test, self.eval_batch_size, seed=0, epoch=0, shuffle=False, drop_last=False,
                    mean=self.data.mean, std=self.data.std, device=self.data.device), self.task.eval_metrics)
                eval_time += time.perf_counter() - start
            seen = after["samples_seen"] - before["samples_seen"]
            record = dict(epoch=epoch + 1, steps=int(state["step"]), all_data=float(all_data),
                          test_accuracy=test["accuracy"], test_loss=test["loss"],
                          train_time_s=train_time, eval_time_s=eval_time,
                          epoch_activation_rate=(after["samples_trained"] - before["samples_trained"]) / max(1, seen),
                          epoch_saved_pct=_saved(after, before), saved_pct=_saved(after),
                          flops_spent=after["flops_spent"], flops_full=after["flops_full"],
                          samples_trained=after["samples_trained"], samples_scored=after["samples_scored"])
            table = _grown(state["history", "epochs"], epoch + 1)
            row = torch.tensor([float(record[k]) for k in EPOCH_KEYS], dtype=table.dtype, device=table.device)
            table = table.index_put((torch.tensor([epoch], device=table.device),), row[None])
            self.state = _with(state, history={"epochs": table},
                               clock={"eval_time": torch.tensor(eval_time, dtype=torch.float64)})
        self.state = _with(self.state, loop={"epoch": torch.tensor(epoch + 1), "batch": torch.tensor(0),
                                             "finished": torch.tensor(finished)})
        if record is not None:
            self._hooks("on_epoch_end", record)
        self._hooks("on_safe_point")

    def _evaluation_due(self, train_time: float) -> bool:
        """Every epoch, or with `eval_every` once that much train time has passed since the last evaluation."""
        if self.eval_every is None:
            return True
        table = self.state["history", "epochs"]
        evaluated = table[~table[:, EPOCH_KEYS.index("test_accuracy")].isnan()]
        last = float(evaluated[:, EPOCH_KEYS.index("train_time_s")].max()) if len(evaluated) else 0.0
        return train_time >= last + self.eval_every

    def _finish_loop(self) -> None:
        self.state = _with(self.state, loop={"finished": torch.tensor(True)})

    def finish(self) -> Result:
        """The Result (summary, history, state); calls on_end. Trains to the end first if needed."""
        while not self.finished:
            self.advance()
        history = History.from_state(self.state)
        summary = summarize(self, history) if self.collective.is_main else {}
        result = Result(summary, history, self.state)
        self._hooks("on_end", result)
        return result


# --------------------------------------------------------------------------- summaries


def summarize(run: Run, history: History) -> dict:
    """A run's summary: accuracy, train wall-clock (eval apart), throughput, work counters and savings."""
    state, config = run.state, run.config
    final = history.epochs[-1] if history.epochs else {"test_accuracy": float("nan")}  # always evaluated
    counters = _counters(state)
    post = [e for e in history.epochs if not e.get("all_data")] or history.epochs
    post_rate = sum(e["epoch_activation_rate"] for e in post) / len(post) if post else 0.0
    train_time = float(state["clock", "train_time"])
    if run.meter:
        energy_j, energy_kind = float(state["clock", "joules"]), f"measured, {run.meter.name}"
    else:
        per_gflop = getattr(run, "joules_per_gflop", 1.0)
        energy_j = estimate_joules(counters["flops_spent"], per_gflop)
        energy_kind = f"estimate: FLOPs x {per_gflop:g} J/GFLOP, no meter"
    budget = config.budget
    return dict(strategy=config.strategy, seed=config.seed, epochs=len(history.epochs),
                warmup_epochs=run.plan.warmup_epochs, cooldown_epochs=run.plan.cooldown_epochs,
                target_rate=config.target_rate if config.gated else 1.0,
                budget=f"{budget[0]} {budget[1]:g}" if budget else f"epochs {config.epochs}",
                test_accuracy=final["test_accuracy"], train_time_s=train_time,
                eval_time_s=float(state["clock", "eval_time"]),
                mean_activation_rate_after_warmup=post_rate, flops_saved_pct=_saved(counters),
                flops_spent=counters["flops_spent"], flops_full=counters["flops_full"],
                samples_seen=counters["samples_seen"], samples_scored=counters["samples_scored"],
                samples_trained=counters["samples_trained"],
                samples_per_s=counters["samples_trained"] / train_time if train_time else 0.0,
                flops_per_s=counters["flops_spent"] / train_time if train_time else 0.0,
                steps=int(state["step"]), model_params=sum(p.numel() for p in state["params"].values()),
                skipped_nonfinite_updates=int(state["loop", "skipped_total"]), energy_j=energy_j,
                energy_kind=energy_kind, **run.rule.summary(state["selector"]))


# --------------------------------------------------------------------------- entry points


def train_full(model: nn.Module, data: Data, config: TrainConfig, name: str | None = None, task: Task | None = None
               ) -> tuple[TensorDict, dict]:
    """Plain training of `config` on `data` with no evaluation before the end (a rule's reference models):
    (the final state, the summary)."""
    run = Run(model, data, config, name=name, eval_every=math.inf, task=task)
    result = run.finish()
    return run.state, result.summary


def full_epoch_cost(model: nn.Module | Callable[[], nn.Module], data: Data, batch_size: int, seed: int = 0,
                    kind: str = "time", steps: int = 5) -> float:
    """Seconds (kind "time") or FLOPs (kind "flops") of one full-data epoch of `model` on `data` on this machine:
    the median of a few steps on a throwaway state (what a budget of N epochs is measured in)."""
    budget = {"time_budget": 1.0} if kind == "time" else {"flop_budget": 1.0}
    run = Run(model, data, TrainConfig(strategy="full", batch_size=batch_size, seed=seed, **budget))
    run.probe_costs(steps=steps)
    return float(run.state["loop", "cost_all_data"]) * run.plan.all_data_steps


def fit(model: nn.Module | Callable[[], nn.Module], train, test, config: TrainConfig = TrainConfig(), *,
        callbacks: Sequence[Callback] = (), state: TensorDict | None = None, device=None,
        log_every: int = 25, safe_point_every: int = 200, eval_every: float | None = None,
        collective: distributed.Collective = distributed.LOCAL, name: str | None = None, meter=None,
        task: Task | None = None) -> Result:
    """Train `model` (an nn.Module classifier, or a function building one, called after seeding) on `train`,
    evaluate on `test` at each epoch end, as `config` says; `state` continues a saved run; `task` is the problem
    (default: image classification, `tasks.image_classification`). Returns a Result."""
    data = train if isinstance(train, Data) else Data.prepare(train, test, device, config.label_noise, config.seed)
    run = Run(model, data, config, name=name, callbacks=callbacks, state=state, log_every=log_every,
              safe_point_every=safe_point_every, eval_every=eval_every, collective=collective, meter=meter, task=task)
    return run.finish()


def compare(model: Callable[[], nn.Module], train, test, configs: Iterable[TrainConfig], *,
            callbacks_for: Callable[[TrainConfig], Sequence[Callback]] = lambda config: (),
            states: dict[int, TensorDict] | None = None, device=None, interleave: bool = True,
            slices: int = 20, log_every: int = 25, safe_point_every: int = 200, eval_every: float | None = None,
            collective: distributed.Collective = distributed.LOCAL, meter=None, task: Task | None = None
            ) -> list[Result]:
    """Train every config (strategies and seeds) on the same data; with `interleave`, taking turns: each run
    trains one epoch in turn or, under a shared time budget, the run with the least train time so far trains
    budget/`slices` seconds next (lockstep), so a slow or fast spell of the machine falls on all of them alike.
    `states[i]` resumes config i. Results in the order given."""
    configs = list(configs)
    if not configs:
        raise ConfigError("compare: no configuration to run")
    first = configs[0]
    data = train if isinstance(train, Data) else Data.prepare(train, test, device, first.label_noise, first.seed)
    runs = [Run(model, data, config, callbacks=callbacks_for(config), state=(states or {}).get(i),
                log_every=log_every, safe_point_every=safe_point_every, eval_every=eval_every,
                collective=collective, meter=meter, task=task)
            for i, config in enumerate(configs)]
    if not interleave:
        return [run.finish() for run in runs]
    while not all(run.finished for run in runs):
        budget = first.budget
        if budget is not None and budget[0] == "time" and all(r.config.budget == budget for r in runs):
            # Lockstep in train time: the run that has trained least goes next, for budget/slices seconds, so
            # every run spends each stretch of its budget in the same minutes of the host's life.
            min((r for r in runs if not r.finished), key=lambda r: r.clock.now()).advance(budget[1] / slices)
            continue
        for run in runs:  # an epoch each, in turn
            if not run.finished:
                run.advance()
    return [run.finish() for run in runs]
