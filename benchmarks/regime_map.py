"""The regime map: the savings question once per regime (`functional_ast.pays.regimes`), every rule at equal FLOPs
against budget-matched full data and a random subset, 3 seeds, each cell's JSON in docs/results/map-<regime>/.

    python -m benchmarks.regime_map --data PATH                  # every regime, one after another
    python -m benchmarks.regime_map --data PATH --only clean,lt10 --threads 1   # a lane (run two on 2 cores)
    python -m benchmarks.regime_map --data PATH --list           # the commands, not run
    python -m benchmarks.regime_map --redraw --only text-junk30 --store STORE   # finished cells' figures, again

A stopped map continues with the same command: a cell whose JSON exists is skipped, a started one resumes
(`--resume`), the others start. Fine-tuning first pretrains the network on the 6 animal classes of the whole
training set (`pretrain`, 15 epochs of full data, kept beside the run store) and starts every run from it.
FLOP budgets make every figure but the wall-clock the same on any machine, so lanes may share the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from functional_ast.cli import main as cli
from functional_ast.cli import objects, savings
from functional_ast.pays import regimes
from functional_ast.pays import run as savings_run

PRETRAIN_EPOCHS = 15


def cell_args(regime: str, data: str | None, out: Path, store: str, seeds: str, init_from: Path | None) -> list[str]:
    """The savings benchmark's flags for one cell of the map."""
    task = regimes.REGIMES[regime]["task"]
    json_path = out / f"map-{regime}" / f"map-{regime}.json"
    flags = ["--regime", regime, "--quick", "--budget-kind", "flops", "--seeds", seeds, "--json", str(json_path),
             "--tracking-uri", store, "--strategies", regimes.TEXT_RULES if task == "lm" else regimes.IMAGE_RULES]
    if task == "images":
        flags += ["--data", str(data)]
    if regime == "finetune":
        flags += ["--init-from", str(init_from)]
    return flags


def pretrain(data: str, store: str, folder: Path) -> Path:
    """The network fine-tuning starts from: cnn, full data, the 6 animal classes of the whole training set
    (checkpointed in `folder`; an existing one is reused)."""
    if any(folder.rglob("result.json")):
        return folder
    code = cli.main(["--data", data, "--classes", ",".join(regimes.ANIMALS), "--strategy", "full", "--epochs",
                     str(PRETRAIN_EPOCHS), "--tracking-uri", store, "--experiment", "regime-map-pretrain",
                     "--run-name", "pretrain-animals", "--checkpoint-dir", str(folder), "--no-progress",
                     "--seed", "0"])
    if code:
        raise SystemExit(code)
    return folder


def cell_checkpoints(store_dir: Path, json_path: Path) -> Path:
    """Where a cell's runs are checkpointed in its lane's store."""
    return store_dir / "checkpoints" / savings.EXPERIMENT / json_path.stem


def redraw(chosen: list[str], out: Path, store_dir: Path) -> int:
    """Each finished cell of `chosen` drawn again from its runs under `store_dir` (`pays.run.redraw`)."""
    for regime in chosen:
        json_path = out / f"map-{regime}" / f"map-{regime}.json"
        if not json_path.is_file():
            print(f"{regime}: not finished ({json_path} is absent); nothing to redraw", flush=True)
            continue
        task = objects.BUILT_IN_TASKS[regimes.REGIMES[regime]["task"]]()
        figures = savings_run.redraw(json_path, cell_checkpoints(store_dir, json_path), task)
        print(f"{regime}: drew {', '.join(map(str, figures))}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.regime_map", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="CIFAR-10 (a directory or the .tar.gz of its JPEGs)")
    p.add_argument("--only", default=",".join(regimes.names()), help="comma-separated regimes")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="docs/results", help="where each cell's folder goes")
    p.add_argument("--store", default="sqlite:///mlruns/regime-map/mlflow.db", help="the lane's MLflow store")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 per lane when two lanes share 2 cores)")
    p.add_argument("--list", action="store_true", help="print the cells' commands and stop")
    p.add_argument("--redraw", action="store_true", help="draw the finished cells' figures again from their runs in "
                   "the lane's --store (no training), then stop")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in regimes.REGIMES]
    if unknown:
        p.error(f"unknown regime {', '.join(unknown)}; choose from {', '.join(regimes.names())}")
    store_dir = Path(args.store.removeprefix("sqlite:///")).parent
    if args.redraw:
        return redraw(chosen, Path(args.out), store_dir)
    if args.data is None and any(regimes.REGIMES[r]["task"] == "images" for r in chosen):
        p.error("--data is required for the image regimes (CIFAR-10)")
    out = Path(args.out)
    pretrained = store_dir / "pretrain-animals"
    for regime in chosen:
        flags = cell_args(regime, args.data, out, args.store, args.seeds, pretrained)
        json_path = Path(flags[flags.index("--json") + 1])
        if args.list:
            print("python -m functional_ast savings " + " ".join(flags))
            continue
        if json_path.exists():
            print(f"{regime}: done ({json_path})", flush=True)
            continue
        if regime == "finetune":
            pretrain(args.data, args.store, pretrained)
        checkpoints = cell_checkpoints(store_dir, json_path)
        started = (checkpoints / "benchmark.json").is_file()
        json_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"{regime}: {'resuming' if started else 'starting'}: python -m functional_ast savings {' '.join(flags)}",
              flush=True)
        code = savings.main(flags + (["--resume"] if started else []))
        if code:
            print(f"{regime}: the benchmark exited with {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
