"""The trainer: `fit(model, train, test, config, callbacks)` and `compare(...)` over the pure step.

It drives `state, metrics = step(state, batch)` through the run's phases (warm-up and
cool-down epochs on all data, selective epochs in between), draws every batch with
`sampling` (pure in seed, epoch, position and state), gathers metrics every `log_every`
steps in one transfer, evaluates at each epoch end and hands the edges (checkpoints,
tracking, progress) to callbacks. With a time or FLOP budget the learning-rate schedule's
horizon is re-planned as the budget is spent, so every strategy anneals fully at the budget.

The loop's position, clock, skip counters and history live in the state TensorDict
("loop", "clock", "history", declared in `core.state`), kept by the pure functions of
`loop_state`, `history` and `budget`; `Run` drives them. Resuming means loading the state:
`fit(model, train, test, config, state=checkpoint.load(path)[0])`.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Iterable, NamedTuple, Sequence

import torch
from tensordict import TensorDict
from torch import nn

from functional_ast.core import distributed, optim
from functional_ast.core.selection import Strategy, all_data, with_selection_info
from functional_ast.core.state import EPOCH_COLUMNS, STEP_SERIES, UNKNOWN
from functional_ast.core.step import Step, accepts_channels_last, init_state, make_eval_step, make_train_step
from functional_ast.core.task import Task
from functional_ast.core.work import DEFAULT_JOULES_PER_GFLOP, estimate_joules
from functional_ast.data.loaders import as_data  # noqa: F401  (re-exported: where it lived before)
from functional_ast.data.source import DataSource, ImageData
from functional_ast.strategies import registry
from functional_ast.tasks import image_classification
from functional_ast.train import budget, loop_state
from functional_ast.train import history as history_state
from functional_ast.train.base import Callback, Result, RunView, Summary
from functional_ast.train.batches import Batches
from functional_ast.train.config import ConfigError, TrainConfig
from functional_ast.train.history import History, counters, saved_pct
from functional_ast.train.loop import evaluate, gather_metrics
from functional_ast.train.loop_state import init_loop
from functional_ast.train.plan import Plan, build_optimizer, build_strategy, strategy_context
from functional_ast.train.reference import ReferenceServices

# Re-exported: the history's columns and series and the loop's part of a new state, as before.
STEP_KEYS, EPOCH_KEYS = STEP_SERIES, EPOCH_COLUMNS
__all__ = ["Callback", "Data", "DataSource", "EPOCH_KEYS", "History", "Result", "Run", "STEP_KEYS", "UNKNOWN",
           "as_data", "compare", "fit", "full_epoch_cost", "init_loop", "summarize", "train_full"]


# --------------------------------------------------------------------------- data and results


Data = ImageData  # the image data of a run under its former name (`data.source.ImageData`); any DataSource will do


# --------------------------------------------------------------------------- the clock and the steps


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


class Built(NamedTuple):
    """What a run is built from its model, data and config."""

    plan: Plan
    context: registry.Context  # what the rule is built from
    strategy: Strategy
    optimizer: optim.GradientTransformation
    all_data_step: Step
    selective_step: Step  # trains what `sampling.draw` selected, or scores its pool and selects inside the step
    eval_step: Callable[[TensorDict, TensorDict], TensorDict]
    template: TensorDict  # a new state: the step's parts (`step.init_state`) and the loop's (`loop_state.init_loop`)


def build(model: nn.Module, data: DataSource, config: TrainConfig, task: Task, collective: distributed.Collective
          ) -> Built:
    """The plan, the rule, the optimiser, the steps and a new state of a run of `config` on `data`."""
    plan = Plan.of(config, data.num_samples)
    image_shape = data.sample_shape
    context = strategy_context(config, plan, image_shape, data.num_classes, task)
    strategy, optimizer = build_strategy(config, context), build_optimizer(config, plan)
    channels_last = config.channels_last(data.device) and (  # "auto" only where the model runs on it
        config.memory_format == "channels_last" or accepts_channels_last(model, image_shape))
    common = dict(compile=config.compile, collective=collective, channels_last=channels_last,
                  precision=config.precision)
    all_data_step = make_train_step(model, task, optimizer, all_data(strategy), **common)
    if strategy.index_only or strategy.sampling is not None:
        selective_step = make_train_step(model, task, optimizer, all_data(strategy), seen_per_step=plan.pool_size,
                                         **common)
    else:
        selective_step = make_train_step(model, task, optimizer, strategy, score_chunk_size=config.batch_size,
                                         **common)
    eval_step = make_eval_step(model, task, channels_last=channels_last, precision=config.precision)
    template = init_state(model, optimizer, strategy, key=config.seed, device=data.device)
    template.update(init_loop(plan, data.device, budgeted=config.budget is not None))
    return Built(plan, context, strategy, optimizer, all_data_step, selective_step, eval_step, template)


def probe_step_costs(kind: str, plan: Plan, batches: Batches, state: TensorDict, steps_by_phase: dict[bool, Step],
                     steps: int = 3) -> dict[str, float]:
    """Cost per step of each phase (cost_all_data, cost_selective), in seconds (kind "time") or FLOPs: the median of
    `steps` steps after a first one (which measures FLOPs and warms caches), on throwaway states (steps are pure)."""
    costs = {}
    for phase, on_all_data in (("cost_all_data", True), ("cost_selective", False)):
        if not on_all_data and not plan.gated:
            costs[phase] = costs["cost_all_data"]
            continue
        current, samples = state, []
        for b in range(steps + 1):
            position = b % (plan.all_data_steps if on_all_data else plan.selective_steps)
            current, batch, _ = batches.draw(current, 0, position, on_all_data)
            flops = float(current["work", "flops_spent"])
            start = time.perf_counter()
            current, metrics = steps_by_phase[on_all_data](current, batch)
            float(metrics["loss"])
            if b:
                samples.append(time.perf_counter() - start if kind == "time"
                               else float(current["work", "flops_spent"]) - flops)
        costs[phase] = sorted(samples)[len(samples) // 2]
    return costs


def prepare_rule(rule: registry.Rule, context: registry.Context, config: TrainConfig, state: TensorDict,
                 services: ReferenceServices) -> tuple[TensorDict, int, float]:
    """Run the rule's `prepare` on the state's selector (rho_loss's reference models): (the prepared selector state,
    the FLOPs and the seconds it took, which the run is charged)."""
    start = time.perf_counter()
    selector, flops = rule.prepare(state["selector"], context, rule.make_options(config.options), services)
    return selector, flops, time.perf_counter() - start


def recorded_epoch(state: TensorDict, epoch: int, all_data: bool, evaluate_now: bool,
                   evaluate_state: Callable[[TensorDict], dict[str, float]], headline: str = "accuracy"
                   ) -> tuple[TensorDict, dict]:
    """(the state with epoch `epoch`'s record in its history, the record); its test metrics are
    `evaluate_state(state)`, its eval time counted, when `evaluate_now`, and NaN otherwise (the history keeps
    accuracy, loss and the task's `headline`; the record also holds its other metrics as test_<name>)."""
    train_time, eval_time = float(state["clock", "train_time"]), float(state["clock", "eval_time"])
    test = {"accuracy": math.nan, "loss": math.nan, headline: math.nan}
    if evaluate_now:
        start = time.perf_counter()
        test = evaluate_state(state)
        eval_time += time.perf_counter() - start
    record = history_state.epoch_record(state, epoch, all_data, test, train_time, eval_time, headline)
    state = history_state.record_epoch(state, epoch, record)
    record.update({f"test_{k}": v for k, v in test.items() if k not in ("accuracy", "loss")})
    return state, record


def evaluate_test(eval_step: Callable, state: TensorDict, data: DataSource, task: Task, batch_size: int
                  ) -> dict[str, float]:
    """The task's metrics of `state` on the test set (in order, whole, not augmented)."""
    return evaluate(eval_step, state, data.test_batches(batch_size), task.eval_metrics)


# --------------------------------------------------------------------------- one run


class Run:
    """One strategy's training, built once from (model, data, config). `advance()` trains an epoch (or `seconds`),
    so runs can take turns; `finish()` returns the Result. `state` is the whole truth, kept by the pure functions of
    `loop_state`, `history` and `budget`: Run drives the steps, calls the hooks and keeps the wall-clock."""

    def __init__(self, model: nn.Module | Callable[[], nn.Module], data: DataSource, config: TrainConfig, *,
                 name: str | None = None, callbacks: Sequence[Callback] = (), state: TensorDict | None = None,
                 log_every: int = 25, safe_point_every: int = 200, eval_batch_size: int = 512,
                 eval_every: float | None = None, collective: distributed.Collective = distributed.LOCAL, meter=None,
                 task: Task | None = None, joules_per_gflop: float = DEFAULT_JOULES_PER_GFLOP):
        self.config, self.data, self.collective, self.meter = config, data, collective, meter
        if task is not None and config.label_smoothing:
            raise ConfigError("TrainConfig.label_smoothing smooths the built-in image task's labels; with a task of "
                              "your own, build it with tasks.image_classification(label_smoothing=...) and set 0")
        self.task = task or image_classification(config.label_smoothing)
        self.callbacks, self.name = list(callbacks), name or config.strategy
        self.eval_every = eval_every  # train seconds, or ("flops", N), between evaluations (None: every epoch)
        self.log_every, self.safe_point_every, self.eval_batch_size = log_every, safe_point_every, eval_batch_size
        self.rule = config.rule
        with torch.random.fork_rng(devices=[]):  # seeded initialisation; the caller's global generator untouched
            torch.manual_seed(config.seed)
            self.model = model() if callable(model) and not isinstance(model, nn.Module) else model
            (self.plan, self.context, self.strategy, self.optimizer, self.all_data_step, self.selective_step,
             self.eval_step, self.template) = build(self.model, data, config, self.task, collective)
        self.state = self.template if state is None else loop_state.resumed(state, self.template, data.device)
        if state is None and config.budget is None and (told := self.plan.no_selection()):
            warnings.warn(told, stacklevel=2)
        self.augment = config.augment if config.augment is not None else self.task.augment(data)
        self.batches = Batches(self.strategy, data, self.task, self.plan, config.seed, self.augment)
        self.clock = _Clock(float(self.state["clock", "train_time"]))
        self.pacer, self._started = budget.Pacer(config.budget, self.plan, self.clock), False
        self.joules_per_gflop, self.view = joules_per_gflop, RunView(self)

    epoch = property(lambda self: int(self.state["loop", "epoch"]), doc="The epoch being trained (0-based).")
    finished = property(lambda self: bool(self.state["loop", "finished"]), doc="Whether the training is over.")

    def budget_used(self) -> float:
        return self.pacer.used(self.state)

    def _hooks(self, name: str, *args) -> None:
        with self.clock.paused():
            for cb in self.callbacks:
                getattr(cb, name)(self.view, *args)

    def start(self) -> None:
        """Once: prepare the rule if it asks (charged to this run), probe step costs under a budget, on_start."""
        if self._started:
            return
        self._started = True
        limit = self.config.budget
        if limit is not None and float(self.state["loop", "cost_all_data"]) == UNKNOWN:
            self.probe_costs()
            epoch_cost = float(self.state["loop", "cost_all_data"]) * self.plan.all_data_steps
            if told := self.plan.no_selection(limit[1] / epoch_cost):
                warnings.warn(told, stacklevel=2)
        if self.rule.prepare is not None and self.rule.needs_prepare(self.state["selector"]):
            if limit is not None:
                self.refuse_unaffordable(self.rule.prepare_epochs(self.rule.make_options(self.config.options)),
                                         f"{self.rule.name}'s reference models")
            services = ReferenceServices(self.model, self.data, self.config, train_full, task=self.task)
            selector, flops, seconds = prepare_rule(self.rule, self.context, self.config, self.state, services)
            self.charge(seconds, flops, selector)
            if limit is not None:
                self.state = self.pacer.replanned(self.state, 0, True)  # the horizon after the charge
        if limit is not None:
            self.pacer.started(self.state)
        self._hooks("on_start")

    def refuse_unaffordable(self, prepare_epochs: float, what: str) -> None:
        """ConfigError (one line, naming the smallest budget that works) when the budget cannot pay for
        `prepare_epochs` full-data epochs of preparation and the all-data epochs and still train selectively."""
        epoch_cost = float(self.state["loop", "cost_all_data"]) * self.plan.all_data_steps
        refusal = budget.preparation_refusal(self.config.budget, epoch_cost, prepare_epochs,
                                             self.plan.warmup_epochs + self.plan.cooldown_epochs, what)
        if refusal is not None:
            raise ConfigError(refusal)

    def charge(self, seconds: float, flops: int, selector: TensorDict | None = None) -> None:
        """Count work done before the first step (a reference model) in the clock and FLOPs; set `selector`."""
        self.clock.spent += seconds
        selector = self.state["selector"] if selector is None else selector
        self.state = loop_state.charged(self.state, selector, flops, self.clock.now())

    def advance(self, seconds: float | None = None) -> None:
        """Train to the end of this epoch (and evaluate), for `seconds` more, or until the budget is spent."""
        self.start()
        if self.finished:
            return
        epoch, b = self.epoch, int(self.state["loop", "batch"])
        if budget.epochs_done(self.config.budget, self.plan, epoch):
            self.state = loop_state.ended(self.state)
            return
        if b == 0:  # a budget may leave only the cool-down's cost: this epoch then cools down
            self._cooldown_due(loop_state.phase(self.state, self.plan)[0], epoch)
            self.state = loop_state.epoch_started(self.state)
        on_all_data, n_batches = loop_state.phase(self.state, self.plan)
        step = self.all_data_step if on_all_data else self.selective_step
        until = None if seconds is None else self.clock.now() + seconds
        pending, chunk_start = [], int(self.state["step"])
        energy_start = self.meter.read() if self.meter else 0.0
        self.clock.start()
        try:
            while not (epoch_over := b >= n_batches or self.pacer.spent(self.state)
                       or self._cooldown_due(on_all_data, epoch + 1)):
                if until is not None and self.clock.now() >= until:
                    break
                self.state, batch, info = self.batches.draw(self.state, epoch, b, on_all_data)
                self.state, metrics = step(self.state, batch)
                if info is not None:  # an index-only selection's metrics (threshold, rate EMA, loss_seen)
                    metrics = with_selection_info(metrics, info)
                pending.append(metrics)
                b += 1
                safe_point = self.safe_point_every and (chunk_start + len(pending)) % self.safe_point_every == 0
                if safe_point or len(pending) >= self.log_every:
                    chunk_start, pending = self._flush(pending, chunk_start, on_all_data, b), []
                if safe_point:
                    self.state = loop_state.at(self.state, epoch, b, self.clock.now())
                    self._hooks("on_safe_point")
            if pending:
                self._flush(pending, chunk_start, on_all_data, b)
            float(self.state["step"])  # wait for queued device work before reading the clock
        except BaseException as error:  # a diverged run, Ctrl-C, a bug: save what is good, tell the edges
            self.clock.stop()
            self.state = loop_state.at(self.state, epoch, b, self.clock.now())
            self._hooks("on_failure", error)
            raise
        finally:
            self.clock.stop()
        if self.meter:
            self.state = loop_state.with_joules(self.state, self.meter.joules(energy_start, self.meter.read()))
        self.state = loop_state.at(self.state, epoch, b, self.clock.now())
        if epoch_over:
            self._end_epoch(epoch, on_all_data)

    def _cooldown_due(self, on_all_data: bool, starts_at: int) -> bool:
        """Under a budget, whether only the cool-down's cost is left (it then starts at epoch `starts_at`)."""
        if due := self.pacer.cooldown_due(self.state, on_all_data):
            self.state = loop_state.cooling_from(self.state, starts_at)
        return due

    def _flush(self, pending: list[TensorDict], chunk_start: int, on_all_data: bool, batch: int) -> int:
        """Gather pending metrics (one transfer), run the guard, keep the history, call on_metrics, re-plan."""
        chunk = gather_metrics(pending)
        self.state = loop_state.with_skips(self.state, chunk, chunk_start)  # raises at too many non-finite steps
        self.state = history_state.record_steps(self.state, chunk_start, chunk)
        self._hooks("on_metrics", chunk_start, chunk)
        self.state = self.pacer.replanned(self.state, len(pending), on_all_data, batch)  # under a budget
        return chunk_start + len(pending)

    def probe_costs(self, steps: int = 3) -> None:
        """Each phase's cost per step (seconds or FLOPs) from a few pure steps on the state; sets the horizon."""
        costs = probe_step_costs(self.config.budget[0], self.plan, self.batches, self.state,
                                 {True: self.all_data_step, False: self.selective_step}, steps)
        self.state = self.pacer.replanned(budget.with_costs(self.state, **costs), 0, True)

    def _end_epoch(self, epoch: int, on_all_data: bool) -> None:
        """Evaluate (rank 0: every epoch, at the end, or as `eval_every` says) and record the epoch; move on."""
        finished = self.pacer.spent(self.state) or budget.epochs_done(self.config.budget, self.plan, epoch + 1)
        record = None
        if self.collective.is_main:  # rank 0 evaluates and records
            self.state, record = recorded_epoch(
                self.state, epoch, on_all_data, finished or history_state.evaluation_due(self.state, self.eval_every),
                lambda state: evaluate_test(self.eval_step, state, self.data, self.task, self.eval_batch_size),
                self.task.headline)
        self.state = loop_state.next_epoch(self.state, epoch, finished)
        if record is not None:
            self._hooks("on_epoch_end", record)
        self._hooks("on_safe_point")

    def finish(self) -> Result:
        """The Result (summary, history, state); calls on_end (after on_start, also for a run resumed from its
        last checkpoint and killed before its end was recorded). Trains to the end first if needed."""
        self.start()
        while not self.finished:
            self.advance()
        history = History.from_state(self.state)
        result = Result(summarize(self, history) if self.collective.is_main else {}, history, self.state)
        self._hooks("on_end", result)
        return result


# --------------------------------------------------------------------------- summaries


def summarize(run: Run, history: History) -> Summary:
    """A run's summary: the task's test metrics of the final record (and those it implies, `Task.from_record`), the
    phases as they ran, train wall-clock (eval apart), throughput, work counters and savings, the rule's fields."""
    state, config = run.state, run.config
    final = history.epochs[-1] if history.epochs else {"test_accuracy": math.nan}  # always evaluated
    work = counters(state)
    post = [e for e in history.epochs if not e.get("all_data")] or history.epochs
    post_rate = sum(e["epoch_activation_rate"] for e in post) / len(post) if post else 0.0
    train_time = float(state["clock", "train_time"])
    if run.meter:
        energy_j, energy_kind = float(state["clock", "joules"]), f"measured, {run.meter.name}"
    else:
        energy_j = estimate_joules(work["flops_spent"], run.joules_per_gflop)
        energy_kind = f"estimate: FLOPs x {run.joules_per_gflop:g} J/GFLOP, no meter"
    limit = config.budget
    warmup, selective, cooldown = history_state.phases_ran(history.epochs, run.plan.gated)
    test = {"accuracy": final["test_accuracy"], "loss": final.get("test_loss", math.nan)}
    test.update(run.task.from_record(test))
    test[run.task.headline] = history_state.headline_value(final, run.task.from_record, run.task.headline)
    if math.isnan(test["accuracy"]) and run.task.headline != "accuracy" and "accuracy" not in run.task.columns:
        del test["accuracy"]  # a task without an accuracy (a regression)
    return Summary(strategy=config.strategy, seed=config.seed, epochs=len(history.epochs), warmup_epochs=warmup,
                   selective_epochs=selective, cooldown_epochs=cooldown,
                   epochs_cut_short=history_state.cut_short(history.epochs, run.plan,
                                                            int(state["loop", "cooldown_from"])),
                   target_rate=config.rate_target if config.gated else 1.0,
                   budget=f"{limit[0]} {limit[1]:g}" if limit else f"epochs {config.epochs}",
                   headline=run.task.headline, higher_is_better=run.task.higher_is_better, test=test,
                   train_time_s=train_time, eval_time_s=float(state["clock", "eval_time"]),
                   mean_activation_rate_after_warmup=post_rate, flops_saved_pct=saved_pct(work),
                   flops_spent=work["flops_spent"], flops_full=work["flops_full"],
                   samples_seen=work["samples_seen"], samples_scored=work["samples_scored"],
                   samples_trained=work["samples_trained"],
                   samples_per_s=work["samples_trained"] / train_time if train_time else 0.0,
                   flops_per_s=work["flops_spent"] / train_time if train_time else 0.0,
                   steps=int(state["step"]), model_params=sum(p.numel() for p in state["params"].values()),
                   skipped_nonfinite_updates=int(state["loop", "skipped_total"]), energy_j=energy_j,
                   energy_kind=energy_kind, rule=run.rule.summary(state["selector"]), labels=dict(run.task.labels))


# --------------------------------------------------------------------------- entry points


def train_full(model: nn.Module, data: DataSource, config: TrainConfig, name: str | None = None,
               task: Task | None = None) -> tuple[TensorDict, dict]:
    """Plain training of `config` on `data` with no evaluation before the end (a rule's reference models):
    (the final state, the summary)."""
    run = Run(model, data, config, name=name, eval_every=math.inf, task=task)
    result = run.finish()
    return run.state, result.summary


def full_epoch_cost(model: nn.Module | Callable[[], nn.Module], data: DataSource, batch_size: int, seed: int = 0,
                    kind: str = "time", steps: int = 5, task: Task | None = None, precision: str = "32",
                    compile: bool = False) -> float:
    """Seconds (kind "time") or FLOPs (kind "flops") of one full-data epoch of `model` on `data` on this machine
    for `task` (default: image classification), in `precision`, compiled or not: the median of a few steps on a
    throwaway state (what a budget of N epochs is measured in)."""
    budget = {"time_budget": 1.0} if kind == "time" else {"flop_budget": 1.0}
    config = TrainConfig(strategy="full", batch_size=batch_size, seed=seed, precision=precision, compile=compile,
                         **budget)
    run = Run(model, data, config, task=task)
    run.probe_costs(steps=steps)
    return float(run.state["loop", "cost_all_data"]) * run.plan.all_data_steps


def fit(model: nn.Module | Callable[[], nn.Module], train, test, config: TrainConfig = TrainConfig(), *,
        callbacks: Sequence[Callback] = (), state: TensorDict | None = None, device=None,
        log_every: int = 25, safe_point_every: int = 200, eval_every: float | None = None,
        collective: distributed.Collective = distributed.LOCAL, name: str | None = None, meter=None,
        task: Task | None = None, joules_per_gflop: float = DEFAULT_JOULES_PER_GFLOP) -> Result:
    """Train `model` (an nn.Module, or a function building one, called after seeding) on `train`, evaluate on
    `test` at each epoch end, as `config` says; `train`/`test` are images (LabelledImages or (images, labels)),
    text windows (`data.text.split`) or `train` a `DataSource` itself (see `as_data`); `state` continues a saved
    run; `task` is the problem (default: image classification; `tasks.language_modelling` for text);
    `joules_per_gflop` prices the energy estimate where no `meter` reads it. Returns a Result."""
    data = as_data(train, test, device, config.label_noise, config.seed)
    run = Run(model, data, config, name=name, callbacks=callbacks, state=state, log_every=log_every,
              safe_point_every=safe_point_every, eval_every=eval_every, collective=collective, meter=meter, task=task,
              joules_per_gflop=joules_per_gflop)
    return run.finish()


def compare(model: Callable[[], nn.Module], train, test, configs: Iterable[TrainConfig], *,
            callbacks_for: Callable[[TrainConfig], Sequence[Callback]] = lambda config: (),
            states: dict[int, TensorDict] | None = None, device=None, interleave: bool = True,
            slices: int = 20, log_every: int = 25, safe_point_every: int = 200, eval_every: float | None = None,
            collective: distributed.Collective = distributed.LOCAL, meter=None, task: Task | None = None,
            joules_per_gflop: float = DEFAULT_JOULES_PER_GFLOP) -> list[Result]:
    """Train every config (strategies and seeds) on the same data; with `interleave`, taking turns: each run
    trains one epoch in turn or, under a shared time budget, the run with the least train time so far trains
    budget/`slices` seconds next (lockstep), so a slow or fast spell of the machine falls on all of them alike.
    `states[i]` resumes config i. Results in the order given."""
    configs = list(configs)
    if not configs:
        raise ConfigError("compare: no configuration to run")
    first = configs[0]
    data = as_data(train, test, device, first.label_noise, first.seed)
    runs = [Run(model, data, config, callbacks=callbacks_for(config), state=(states or {}).get(i),
                log_every=log_every, safe_point_every=safe_point_every, eval_every=eval_every,
                collective=collective, meter=meter, task=task, joules_per_gflop=joules_per_gflop)
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
