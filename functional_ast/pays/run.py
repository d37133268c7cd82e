"""`savings`: does selection pay on this model, data and task? Every rule against budget-matched full data and a
random subset, over seeds, at each budget, both questions answered (`questions`), one verdict per budget.

For each budget (N full-data epochs of this machine, probed once before the runs: their wall-clock, or with
`budget_kind="flops"` their FLOPs, the same on any machine), every rule and seed trains for exactly that budget
with its learning-rate schedule re-planned to anneal at the budget; under a time budget the runs take turns in
lockstep (the run that has trained least goes next, a 20th of the budget), so the host's speed drift falls on all
of them alike. A rule whose reference models leave no selective training in a budget is left out of it, with the
line that says why and the smallest budget that works. Rho-1 (`rho1_keep`, language models only) runs beside the
comparison, its reference paid inside the budget and, labelled, given free.

Every run is tracked (a parent MLflow run per budget, whose description holds the verdict and whose artifacts hold
the comparison's chart) and checkpointed; `resume=True` continues a stopped question: the budgets probed when it
started are kept, finished runs are read back, the others continue from their newest checkpoint, and seeds may be
added (`seeds=(0,)` first, then `(0, 1, 2)` with `resume`).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from functional_ast import io
from functional_ast.core.checks import ConfigError
from functional_ast.core.task import Task
from functional_ast.data.loaders import as_data
from functional_ast.edges import provenance, runs, store, tracking
from functional_ast.edges.tracked import Tracking, tracked_compare, variant_label
from functional_ast.pays import questions, rho1
from functional_ast.pays.report import Answer, SavingsReport
from functional_ast.report import plots
from functional_ast.report import tables as report
from functional_ast.tasks import image_classification
from functional_ast.train.base import Result
from functional_ast.train.budget import smallest_budget_epochs
from functional_ast.train.config import TrainConfig, parse_variant
from functional_ast.train.trainer import full_epoch_cost

RULES = ("full", "random", "stale", "infobatch")  # the default comparison: both baselines, the default rule, stale
BUDGETS = (6.0, 16.0)  # full-data epochs: a short and a long budget
TARGET_RATE = 0.3  # at 10% a random subset is 14 points below full on CIFAR-10 (README); 30% leaves selection room


def labels_of(budgets: Sequence[float]) -> tuple[str, ...]:
    """The budgets' names: "short" and "long" for two, "<N>-epochs" otherwise."""
    return ("short", "long") if len(budgets) == 2 else tuple(f"{b:g}-epochs" for b in budgets)


def device_name(device: torch.device) -> str:
    """The device the runs trained on, as a reader would name it ("cpu", "cuda:0 (NVIDIA H200)")."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def configs_of(rules: Sequence[str], template: TrainConfig, limit: dict) -> dict[str, TrainConfig]:
    """Each rule spec ("stale", "stale:cooldown=8", "rho_loss:holdout=0.1") as the config it trains: `template`
    with the spec's rule, options and overrides, and the budget `limit` ({"time_budget": s} or {"flop_budget": f})."""
    configs = {}
    for spec in rules:
        name, overrides = parse_variant(spec)
        budgets = dict(dict(time_budget=None, flop_budget=None), **limit)
        configs[spec] = template.replace(strategy=name, options=overrides.pop("options", {}), **budgets
                                         ).replace(**overrides)
    return configs


def differences(then: dict, now: dict, before: dict | None = None) -> list[str]:
    """The settings a resume changes ("name: X then, Y now"); added seeds are no change, nor a setting the started
    question predates when it has the value it ran with (`before`)."""
    then = dict(before or {}, **then)
    return [f"{k}: {then.get(k)!r} then, {v!r} now" for k, v in now.items()
            if then.get(k) != v and not (k == "seeds" and set(then[k]) < set(v))]


def _plan(folder: Path, settings: dict, resume: bool, seeds: Sequence[int], announce, before: dict
          ) -> tuple[dict, list[int]]:
    """The question's plan (its settings, the parts it ran in, the budgets' probes) from `folder`, checked against
    `settings` when resuming (`differences`); (plan, the seeds a resume adds)."""
    path, now = folder / "benchmark.json", time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if not resume:
        return {"settings": settings, "parts": [now]}, []
    if not path.is_file():
        raise ConfigError(f"--resume: no benchmark to resume in {folder}; run the same command without --resume "
                          "to start it (or pass the --checkpoint-dir it used)")
    plan = json.loads(path.read_text())
    differ = differences(plan["settings"], settings, before)
    if differ:
        raise ConfigError(f"--resume: the benchmark in {folder} was started with other flags ({'; '.join(differ)}); "
                          "resume with the original flags (--seeds may add seeds, not drop them)")
    added = sorted(set(seeds) - set(plan["settings"].get("seeds") or []))
    if added:
        announce(f"adding seeds {added} to the benchmark's {plan['settings']['seeds']}")
    return dict(plan, settings=settings, parts=plan["parts"] + [now]), added


def savings(model: Callable[[], nn.Module], train, test=None, *, task: Task | None = None,
            rules: Sequence[str] = RULES, budgets: Sequence[float] = BUDGETS, seeds: Sequence[int] = (0, 1, 2),
            budget_kind: str = "time", config: TrainConfig | None = None, eval_points: int = 12,
            rho1_keep: float | None = None, rho1_reference: float | None = rho1.REFERENCE,
            where: Tracking | None = None, name: str = "savings", json_path: str | Path | None = None,
            resume: bool = False, settings: dict | None = None, settings_before: dict | None = None,
            record: dict | None = None, announce: Callable[[str], None] | None = print) -> SavingsReport:
    """Does selection pay? Train every rule of `rules` (specs, e.g. "stale:cooldown=8"; at least one baseline and one
    selective rule) with each of `seeds` for each budget of `budgets` full-data epochs (`budget_kind` "time" or
    "flops"), `config` the recipe every entry shares (default: TrainConfig at a 30% target), and answer both
    questions per budget (`SavingsReport`). `model` builds the network; `train`/`test` are what `fit` takes (or a
    `DataSource`); `task` the problem (default image classification). Runs are tracked `where` (default: the local
    store), checkpointed in its checkpoint folder, each budget's comparison named `name`-<budget>; with `json_path`,
    the record and a figure per budget (the metric against wall-clock or FLOPs, a band over seeds) are written
    there; `settings` is what a resume must find unchanged (default: the rules, budgets, recipe, data and Rho-1's;
    `settings_before`: the values of settings a started question predates); `record` adds to the JSON."""
    say = announce or (lambda line: None)
    task = task or image_classification()
    template = (config or TrainConfig(target_rate=TARGET_RATE)).replace(seed=seeds[0])
    data = as_data(train, test, None, template.label_noise, template.seed)
    if not any(map(report.is_baseline, rules)) or all(map(report.is_baseline, rules)):
        raise ConfigError("savings needs a baseline (full or random) and a selective rule among the rules")
    if budget_kind not in ("time", "flops"):
        raise ConfigError(f"budget_kind must be time or flops, got {budget_kind!r}")
    where = where or Tracking(experiment=name, log_model=False)
    folder = where.checkpoint_root
    metric = questions.metric_of(task)
    equal_key = "equal_accuracy" if metric.headline == "accuracy" else "equal_metric"
    labels = labels_of(budgets)
    settings = settings or dict(rules=list(rules), budgets=list(budgets), budget_kind=budget_kind,
                                config=template.to_dict(), data=data.fingerprint(), rho1_keep=rho1_keep,
                                rho1_reference=rho1_reference, eval_points=eval_points)
    settings = dict(json.loads(json.dumps(settings, default=str)), seeds=list(seeds))
    plan, added = _plan(folder, settings, resume, seeds, say, settings_before or {})
    if "full_epoch_s" not in plan:
        cost = lambda kind: full_epoch_cost(model, data, template.batch_size, seeds[0], kind, task=task,  # noqa: E731
                                            precision=template.precision, compile=template.compile)
        plan.update(full_epoch_s=cost("time"), full_epoch_flops=cost("flops"))
    folder.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(folder / "benchmark.json", plan)
    epoch_s, epoch_flops = plan["full_epoch_s"], plan["full_epoch_flops"]
    started = {label for label in labels if any((folder / f"{name}-{label}").glob("*/run.json"))} if resume else set()
    out = dict(machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}", device=device_name(data.device), task=task.name, metric=metric.headline,
               higher_is_better=metric.higher_is_better, seeds=list(seeds), strategies=list(rules),
               target_rate=template.target_rate, label_noise=template.label_noise, budget_kind=budget_kind,
               warmup_epochs=template.warmup_epochs, cooldown_epochs=template.cooldown_epochs,
               data=dict(data.describe(), about=data.about()), full_epoch_s=epoch_s, full_epoch_flops=epoch_flops,
               parts=plan["parts"], code=provenance.git_state(), by_budget={})
    out.update(record or {})
    if resume:
        say(f"resuming the benchmark started {plan['parts'][0]} (part {len(plan['parts'])}); budgets as probed then")
    say(f"data: {data.about()}")
    say(f"one full-data epoch takes about {epoch_s:.1f} s and {epoch_flops:.3g} FLOPs here; budgets: "
        + ", ".join(f"{b:g} epochs = {b * epoch_s:.0f} s" for b in budgets)
        + ("" if budget_kind == "time" else " (matched in FLOPs)"))
    entries = len(rules) + (2 if rho1_keep else 0)
    runs, minutes = entries * len(seeds), sum(budgets) * epoch_s / 60
    extra = f" ({entries * len(added) * minutes:.0f} min for the seeds added now)" if added else ""
    with_rho1 = f" (with Rho-1 selective LM at keep {rho1_keep:g}, its reference paid and free)" if rho1_keep else ""
    say(f"{runs} runs per budget ({entries} strategies{with_rho1} x {len(seeds)} seeds): about {runs * minutes:.0f} "
        f"min of training in all ({runs} x {sum(budgets):g} epochs x {epoch_s:.1f} s){extra}, plus evaluations")
    answers = []
    for label, epochs in zip(labels, budgets):
        budget_s = epochs * epoch_s
        budget = budget_s if budget_kind == "time" else epochs * epoch_flops
        limit = {"time_budget" if budget_kind == "time" else "flop_budget": float(budget)}
        configs = configs_of(rules, template, limit)
        refused = questions.unaffordable(configs, epochs)
        for spec, reason in refused.items():
            say(f"{label} budget: {spec} skipped: {reason}")
            del configs[spec]
        eval_every = round(budget_s / eval_points, 3) if budget_kind == "time" else ("flops", budget / eval_points)
        compared = tracked_compare(model, data, configs, f"{name}-{label}", where, seeds=list(seeds),
                                   resume=label in started, eval_every=eval_every, model_label=name,
                                   progress=False, task=task)
        say("\n" + compared.table)
        say(f"Browse the runs: {store.ui_command(where.uri, compared.experiment_id)}")
        results, names = list(compared.results), list(configs)
        rows = questions.rows_with_metric(results, metric)
        has_full = any(map(report.is_full_data, configs))
        entry = {"budget_epochs": epochs, "budget_s": budget_s, "budget_kind": budget_kind, "refused": refused,
                 "budget": budget, "equal_time": questions.equal_time(rows, metric),
                 equal_key: questions.equal_accuracy(results, metric, budget_kind) if has_full else None}
        if rho1_keep:
            base = next((c for s, c in configs.items() if report.is_full_data(s)), next(iter(configs.values())))
            runs_rho1 = rho1_beside(model, data, base, results, entry, epochs, seeds, metric, f"{name}-{label}",
                                    where, resume=resume, eval_every=eval_every, keep=rho1_keep,
                                    share=rho1_reference, task=task, by=budget_kind, say=say)
            results, names = results + runs_rho1, names + list(dict.fromkeys(r.summary.strategy for r in runs_rho1))
        figure = budget_figure(results, names, metric, budget_kind)
        if json_path is not None:
            path = figure_path(json_path, label)
            path.parent.mkdir(parents=True, exist_ok=True)
            plots.save_png(figure, path)
            entry["figure"] = str(path)
        out["by_budget"][label] = entry
        answer = Answer.of(label, entry, equal_key)
        answers.append(answer)
        _tell_parent(where, f"{name}-{label}", compared.run_id, folder / f"{name}-{label}", str(answer), figure)
    headline = out["by_budget"][labels[-1]]  # the longest budget given last
    out["equal_time"] = dict(headline["equal_time"], budget=labels[-1],
                             by_budget={k: v["equal_time"] for k, v in out["by_budget"].items()})
    out[equal_key] = dict(headline[equal_key] or {}, budget=labels[-1],
                          by_budget={k: v[equal_key] for k, v in out["by_budget"].items()})
    if rho1_keep:
        out["selective_lm"] = {k: v.get("selective_lm") for k, v in out["by_budget"].items()}
    out["verdicts"] = {a.label: a.verdict for a in answers}
    if json_path is not None:
        io.atomic_write_json(json_path, out)
    return SavingsReport(metric.headline, metric.higher_is_better, tuple(answers), out)


def rho1_beside(model, data, base: TrainConfig, results, entry: dict, epochs: float, seeds, metric, run_name: str,
                where: Tracking, *, resume: bool, eval_every, keep: float, share: float | None, task, by: str,
                say) -> list:
    """Rho-1's runs at one budget beside its comparison (`results`), its reference paid and given free: their
    answers go in `entry["selective_lm"]`, a budget too small for the paid reference in `entry["refused"]`; returns
    the runs."""
    equal_key = "equal_accuracy" if metric.headline == "accuracy" else "equal_metric"
    has_full = any(report.is_full_data(r.summary.strategy) for r in results)
    cost = rho1.reference_epochs(data, share, seeds) if share else 1.0
    smallest = smallest_budget_epochs(cost, 0)
    entry["selective_lm"], runs = {}, []
    for paid in (True, False):
        if paid and epochs < smallest:
            entry["refused"][rho1.name(keep, paid)] = (
                f"its reference model costs about {cost:.2f} full-data epochs: a budget of {epochs:g} epochs leaves "
                f"no training; the smallest that works is {smallest:g}")
            say(f"{run_name} budget: Rho-1 (reference paid) skipped: {entry['refused'][rho1.name(keep, paid)]}")
            continue
        mine = rho1.rho1_runs(model, data, base.replace(strategy="full"),
                              f"{run_name}-rho1" + ("" if paid else "-free"), where, seeds, resume=resume,
                              eval_every=eval_every, keep=keep, paid=paid, share=share, task=task)
        if has_full:
            entry["selective_lm"]["paid" if paid else "free"] = questions.selective_lm(mine, results, metric,
                                                                                       equal_key, paid, by)
        runs += mine
    return runs


def budget_figure(results, names, metric, budget_kind: str):
    """The metric against the budget's axis (wall-clock or FLOPs executed), a band over seeds, one line per entry."""
    x_key, x_label = (("train_time_s", "train wall-clock (s)") if budget_kind == "time"
                      else ("flops_spent", "training FLOPs executed"))
    return plots.compare_bands(questions.curves(results, names, metric), x_key, x_label, y_key=metric.key,
                               y_label=f"test {metric.headline.replace('_', ' ')}")


def figure_path(json_path: str | Path, label: str) -> Path:
    """A budget's figure beside the question's JSON: <json stem>-<budget label>.png."""
    return Path(json_path).with_name(f"{Path(json_path).stem}-{label}.png")


def redraw(json_path: str | Path, folder: str | Path, task: Task | None = None, name: str = "savings") -> list[Path]:
    """Draw a finished question's figures again (one per budget, beside `json_path`, as `savings` writes them) from
    its runs' result.json files under `folder`, its checkpoint folder, `task` the question's (default image
    classification): no training, the figures of a change to how they are drawn. Returns the figures written; a
    run missing from `folder` is a ConfigError."""
    out = json.loads(Path(json_path).read_text())
    metric = questions.metric_of(task or image_classification())
    written = []

    def finished(pattern: str, strategy: str, seed: int) -> Result:
        """The newest finished run matching `pattern`, named as the question names it (a spec, Rho-1's label)."""
        found = sorted(Path(folder).glob(f"{pattern}/result.json"))
        if not found:
            raise ConfigError(f"redraw: no finished run {pattern} in {folder}; pass the question's checkpoint folder")
        result = runs.finished_result(found[-1].parent)
        result.summary = result.summary.replace(strategy=strategy, seed=seed)
        return result

    for label, entry in out["by_budget"].items():
        names = [s for s in out["strategies"] if s not in entry.get("refused", {})]
        results = [finished(f"{name}-{label}/*/{variant_label(spec)}-seed{seed}", spec, seed)
                   for spec in names for seed in out["seeds"]]
        for how, answer in (entry.get("selective_lm") or {}).items():  # Rho-1 beside: reference paid, and free
            free = "-free" if how == "free" else ""
            results += [finished(f"{name}-{label}-rho1{free}-seed{seed}/*", answer["strategy"], seed)
                        for seed in out["seeds"]]
            names.append(answer["strategy"])
        figure = budget_figure(results, names, metric, out["budget_kind"])
        written.append(plots.save_png(figure, figure_path(json_path, label)))
    return written


def _tell_parent(where: Tracking, run_name: str, run_id: str | None, folder: Path, verdict: str, figure) -> None:
    """The budget's parent MLflow run gets the verdict as its description and the comparison's chart."""
    if run_id is None:
        return
    parent = tracking.RunTracker(where.uri, where.experiment, run_name, run_id=run_id, fallback_dir=folder)
    with parent:
        parent.set_tags({tracking.NOTE_TAG: f"**Does selection pay?** {verdict}\n\nEvery rule against budget-"
                         "matched full data and a random subset, paired by seed, 95% t-intervals; the verdict is "
                         "'pays' only when the interval excludes 0 in the rule's favour."})
        parent.log_figure(figure, "savings_chart.png")
        parent.log_text(verdict + "\n", "verdict.txt")
