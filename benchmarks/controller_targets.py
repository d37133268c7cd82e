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

import torch

import functional_ast as fa
from functional_ast.edges import store
from functional_ast.train import prepare


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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = prepare.load_data(args.data, device=device, limit_train=args.limit_train, limit_test=args.limit_test)
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        name = f"target-{target:g}"
        config = fa.TrainConfig(strategy="sundew", target_rate=target, epochs=args.epochs, warmup_epochs=1,
                                batch_size=args.batch_size)
        tracker = fa.MLflowTracking(args.tracking_uri or store.DEFAULT_TRACKING_URI, "controller-targets", name,
                                    log_model=False, announce=None)
        result = fa.fit(prepare.model_builder("cnn", data), data, None, config, name=name, callbacks=[tracker])
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
