# The script that produced docs/cooldown-*.{log,json} (2026-11-26), kept as the record of those figures;
# run from the repository root: python docs/cooldown-screen.py EPOCHS "full;stale:1;stale:8" [whole]
# (writes /tmp/screen/screen-EPOCHS[-whole].json). `benchmarks.savings --strategies full,stale,stale:cooldown=8` now
# runs the same lockstep comparison with the JSON, figures and MLflow runs of the benchmark.
"""Screen: stale (or random) early, full data for the last share of the budget; quick subset, lockstep."""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
from benchmarks.savings import epoch_cost
from functional_ast import cli, stats
from functional_ast.trainer import TrainConfig, compare

epochs = float(sys.argv[1]); variants = sys.argv[2].split(";"); seeds = [0, 1, 2]
whole = len(sys.argv) > 3 and sys.argv[3] == "whole"
a = cli.build_parser().parse_args(['--data', '/work/shared/data/cifar10-jpeg.tar.gz']
                                  + ([] if whole else ['--limit-train', '6000', '--limit-test', '2000']))
data = cli.load_data(a)
epoch_s = epoch_cost(data, 'cnn', 128, 0)
budget = epochs * epoch_s
print(f"epoch {epoch_s:.1f} s, budget {budget:.0f} s", flush=True)
configs, labels = [], []
for seed in seeds:
    for v in variants:
        name, _, cd = v.partition(":")
        configs.append(TrainConfig(strategy=name, target_rate=0.3, warmup_epochs=1, cooldown_epochs=int(cd or 1),
                                   seed=seed, time_budget=budget, epochs=10_000))
        labels.append((v, seed))
t0 = time.time()
results = compare(cli.model_builder('cnn', data), data, None, configs, eval_every=budget / (6 if whole else 8), safe_point_every=0)
acc = {}
for (v, seed), r in zip(labels, results):
    acc.setdefault(v, {})[seed] = r.summary["test_accuracy"]
    print(v, seed, round(100 * r.summary["test_accuracy"], 2), round(r.summary["train_time_s"], 1),
          f"{r.summary['flops_spent']:.3g}", flush=True)
base = variants[0]
for v in variants:
    m, s = stats.mean_std(list(acc[v].values()))
    d = stats.paired_difference([acc[v][k] for k in seeds], [acc[base][k] for k in seeds])
    print(f"{v}: {100*m:.2f} +- {100*s:.2f}; minus {base}: {stats.describe_difference(d)}")
print(f"wall {time.time()-t0:.0f} s")
os.makedirs("/tmp/screen", exist_ok=True)
json.dump({"budget_s": budget, "epoch_s": epoch_s, "acc": acc, "rows": [dict(variant=v, seed=sd, **{k: r.summary[k] for k in ("test_accuracy", "train_time_s", "flops_spent", "epochs")}) for (v, sd), r in zip(labels, results)], "histories": [dict(variant=v, seed=sd, epochs=r.history.epochs) for (v, sd), r in zip(labels, results)]}, open(f"/tmp/screen/screen-{epochs:g}{'-whole' if whole else ''}.json", "w"))
