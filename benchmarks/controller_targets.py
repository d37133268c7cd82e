"""Controller convergence on real data: the activation rate achieved for each target rate.

    python -m benchmarks.controller_targets --data PATH [--targets 0.05,0.1,0.2,0.3,0.5] [--limit-train N]

Trains `sundew` with default gate/controller settings once per target (1 warm-up epoch,
then gated epochs on selection pools, as the CLI runs it) and prints, per target, the rate
over each gated epoch, the number of controller updates per gated epoch, the final
threshold, and whether the last epoch is within +-max(0.01, 10% of target).
"""

from __future__ import annotations

import argparse
import json
import sys

import functional_ast as fa
from functional_ast.cli import main as cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.controller_targets", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--targets", default="0.05,0.1,0.2,0.3,0.5")
    p.add_argument("--limit-train", type=int, default=None, help="default: the whole training set")
    p.add_argument("--limit-test", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--json", default="controller_targets.json")
    args = p.parse_args(argv)
    data, rows = None, []
    for target in (float(t) for t in args.targets.split(",")):
        name = f"target-{target:g}"
        argv_run = ["--data", args.data, "--strategy", "sundew", "--target-rate", str(target), "--epochs",
                    str(args.epochs), "--warmup-epochs", "1", "--limit-test", str(args.limit_test), "--batch-size",
                    str(args.batch_size), "--no-progress",
                    "--experiment", "controller-targets", "--run-name", name]
        argv_run += ["--limit-train", str(args.limit_train)] if args.limit_train else []
        argv_run += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
        run_args = cli.build_parser().parse_args(argv_run)
        data = data or cli.load_data(run_args)
        tracker = fa.MLflowTracking(run_args.tracking_uri, run_args.experiment, name, log_model=False, announce=None)
        result = fa.fit(cli.model_builder("cnn", data), data, None, cli.train_config(run_args), name=name,
                        callbacks=[tracker])
        epochs = result.history.epochs
        gated = [e["epoch_activation_rate"] for e in epochs[1:]]
        _, threshold = result.history.series("threshold")
        tolerance = max(0.01, 0.1 * target)
        rows.append(dict(target=target, gated_epoch_rates=gated, final_threshold=threshold[-1],
                         # steps after warm-up (the controller moves once per step), not logged points
                         updates_per_gated_epoch=(epochs[-1]["steps"] - epochs[0]["steps"]) // max(1, len(gated)),
                         within_tolerance=abs(gated[-1] - target) <= tolerance, tolerance=tolerance))
    print("\n| target | rate per gated epoch | controller updates per epoch | final threshold | last epoch within "
          "tolerance |")
    print("|---|---|---|---|---|")
    for r in rows:
        rates = ", ".join(f"{x:.3f}" for x in r["gated_epoch_rates"])
        print(f"| {r['target']:g} | {rates} | {r['updates_per_gated_epoch']} | {r['final_threshold']:.3f} | "
              f"{'yes' if r['within_tolerance'] else 'NO'} (+-{r['tolerance']:.3f}) |")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)
    return 0 if all(r["within_tolerance"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
