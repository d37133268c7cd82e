"""The generated tables (the README's map; docs/results.md's map detail and earlier headlines) are what
docs/tables.py makes of the committed result JSON."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tables():
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "docs" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _tables()


RESULTS = REPO / "docs" / "results.md"


def test_readme_block_is_the_generated_table():
    block = tables.readme_block(RESULTS.read_text())
    assert block == tables.readme_table(), "README.md's results table is stale: run python docs/tables.py"


def test_readme_text_block_is_the_generated_text_table():
    block = tables.readme_block(RESULTS.read_text(), tables.TEXT_START, tables.TEXT_END)
    assert block == tables.text_table(), "README.md's text table is stale: run python docs/tables.py"


def test_every_text_row_has_intervals_in_bits_per_byte_seeds_and_a_committed_result():
    lines = tables.text_table().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(rows) == len(tables.TEXT_HEADLINE) >= 4
    interval = re.compile(r"^[+−]\d+\.\d{3} \([+−]\d+\.\d{3} to [+−]\d+\.\d{3}\)$")
    for row in rows:
        cells = dict(zip(header, row))
        assert interval.match(cells["minus full data, bits/byte (95% CI)"]), row
        assert interval.match(cells["minus random subset, bits/byte (95% CI)"]), row
        assert int(cells["seeds"]) >= 3, row
        assert (REPO / "docs" / re.search(r"\]\((results/[^)]+)/\)", cells["result"]).group(1)).is_dir()


def test_check_command_agrees():
    done = subprocess.run([sys.executable, str(REPO / "docs" / "tables.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_every_row_has_intervals_seeds_and_a_committed_result():
    lines = tables.readme_table().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert len(rows) == len(tables.HEADLINE) >= 5
    interval = re.compile(r"^[+−]\d+\.\d\d \([+−]\d+\.\d\d to [+−]\d+\.\d\d\)$")
    for row in rows:
        cells = dict(zip(header, row))
        assert interval.match(cells["minus full data, pp (95% CI)"]), row
        assert interval.match(cells["minus random subset, pp (95% CI)"]), row
        assert int(cells["seeds"]) >= 3, row
        folder = re.search(r"\]\((results/[^)]+)/\)", cells["result"]).group(1)
        assert (REPO / "docs" / folder).is_dir(), folder
    # the rule that was the default when these ran is in the table, at both clean budgets
    assert sum("(the default then)" in r[2] for r in rows) == 2


def test_intervals_match_those_the_benchmark_wrote():
    """The t-table reproduces the interval each benchmark computed itself for its headline pair."""
    checked = 0
    for folder in sorted((REPO / "docs" / "results").iterdir()):
        path = folder / f"{folder.name}.json"
        if not path.exists() or "by_budget" not in (result := tables.json.loads(path.read_text())):
            continue
        for entry in result["by_budget"].values():
            t = entry["equal_time"]
            accuracy = t.get("metric", "accuracy") == "accuracy"  # a text benchmark's is bits per byte, unscaled
            key, scale = ("test_accuracy", 100.0) if accuracy else (f"test_{t['metric']}", 1.0)
            d = tables.paired(t["rows"], t["best"], t["baseline"], key, scale)
            assert d["n"] == t["seeds"]
            assert d["mean"] == pytest.approx(t["diff_pp"] if accuracy else t["diff"], abs=1e-9)
            assert [d["low"], d["high"]] == pytest.approx(t["ci95"], abs=5e-3)
            checked += 1
    assert checked >= 20


def test_figures_the_readme_prints():
    """Whole CIFAR-10, 3 seeds, CPU: the pairs quoted in the README and docs."""
    rows = {b: e["equal_time"]["rows"] for b, e in tables.load("savings-full")["by_budget"].items()}
    expect = [("short", "stale", "full", 0.76, 0.28, 1.24), ("short", "sundew_remembered", "full", 0.39, -0.83, 1.62),
              ("short", "sundew_remembered", "random", 0.83, 0.52, 1.15), ("long", "stale", "full", -0.40, -1.09, 0.29)]
    for budget, rule, base, mean, low, high in expect:
        d = tables.paired(rows[budget], rule, base)
        assert (round(d["mean"], 2), round(d["low"], 2), round(d["high"], 2), d["n"]) == (mean, low, high, 3)


def test_a_changed_json_is_caught(monkeypatch):
    """The check fails when a figure in the JSON no longer matches the README."""
    real = tables.load

    def tampered(name):
        result = real(name)
        rows = result["by_budget"]["short"]["equal_time"]["rows"] if name == "savings-full" else []
        for r in rows:
            if r["strategy"] == "stale" and r["seed"] == 0:
                r["test_accuracy"] -= 0.01
        return result

    monkeypatch.setattr(tables, "load", tampered)
    assert tables.readme_block(RESULTS.read_text()) != tables.readme_table()


def test_the_speed_figures_the_docs_quote_are_the_committed_jsons(monkeypatch):
    """Step speed (images, text), bf16-mixed against fp32 and the torchrl timings, as README.md and
    docs/results.md quote them, are generated from the committed JSON; a changed JSON is caught."""

    def flat(text: str) -> str:  # prose wraps: compare with whitespace collapsed
        return " ".join(text.split())

    def missing() -> list[tuple[str, str]]:
        return [(doc, quote) for doc, quotes in tables.quoted_speeds().items()
                for quote in quotes if flat(quote) not in flat((REPO / doc).read_text())]

    assert missing() == []
    real = tables.load

    def slower(name):
        result = real(name)
        if name == "torchrl-choice":
            result["rows"][1]["ours_ms"] *= 2
        return result

    monkeypatch.setattr(tables, "load", slower)
    assert [doc for doc, _ in missing()] == ["README.md", "docs/results.md"]


def test_the_readme_map_and_its_detail_are_generated_from_the_committed_cells():
    assert tables.readme_block((REPO / "README.md").read_text(), tables.MAP_START, tables.MAP_END) == \
        tables.map_table(), "README.md's map is stale: run python docs/tables.py --write"
    assert tables.readme_block(RESULTS.read_text(), tables.DETAIL_START, tables.DETAIL_END) == \
        tables.map_detail(), "docs/results.md's map detail is stale: run python docs/tables.py --write"


def test_every_map_row_has_its_interval_three_seeds_a_verdict_that_follows_it_and_a_committed_cell():
    lines = [line for line in tables.map_table().splitlines() if line.startswith("|")]  # the table, not the note
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    interval = re.compile(r"^([+−]\d+\.\d+) \(([+−]\d+\.\d+) to ([+−]\d+\.\d+)\) (pp|bits/byte)$")
    for line in lines[2:]:
        cells = dict(zip(header, [c.strip() for c in line.strip("|").split("|")]))
        found = interval.match(cells["minus the better baseline (95% CI)"])
        assert found, line
        low, high = (float(found.group(i).replace("−", "-")) for i in (2, 3))
        higher = found.group(4) == "pp"  # accuracy up, bits per byte down
        expected = "ties" if low <= 0 <= high else ("**pays**" if (low > 0) == higher else "loses")
        assert cells["verdict"] == expected, line
        folder = re.search(r"\]\((docs/results/[^)]+)/\)", cells["result"]).group(1)
        assert (REPO / folder).is_dir(), folder
        result = tables.map_result(folder.rsplit("map-", 1)[1])
        assert sorted(result["seeds"]) == [0, 1, 2]


def test_a_cell_not_measured_yet_is_named_under_the_map_with_the_command_that_measures_it(monkeypatch):
    real = tables.map_result
    monkeypatch.setattr(tables, "map_result", lambda regime: None if regime == "lt100" else real(regime))
    note = tables.map_table().splitlines()[-1]
    assert note.startswith("Not measured yet:") and tables.REGIMES["lt100"] in note
    assert "--only " in note and "lt100" in note.split("--only ")[1]


def test_the_verdict_is_pays_only_when_the_interval_excludes_zero_in_the_rules_favour():
    def d(low, high, n=3):
        return {"mean": (low + high) / 2, "low": low, "high": high, "n": n}

    assert tables.verdict(d(0.1, 2.0), higher=True) == "**pays**"
    assert tables.verdict(d(-2.0, -0.1), higher=True) == "loses"
    assert tables.verdict(d(-2.0, -0.1), higher=False) == "**pays**"  # bits per byte: lower is better
    assert tables.verdict(d(-0.1, 2.0), higher=True) == "ties"
    assert tables.verdict(d(0.1, 2.0, n=2), higher=True) == "too few seeds"
    one = tables.bonferroni(d(1.0, 3.0), rules=1)  # one rule: the plain 95% interval
    assert (one["low"], one["high"]) == pytest.approx((1.0, 3.0))
    eight = tables.bonferroni(d(1.0, 3.0), rules=8)
    assert eight["low"] < 1.0 < 3.0 < eight["high"]  # picked from eight rules: wider


def test_the_library_default_rule_is_the_top_of_the_maps_ranking():
    """The default follows the map: a committed cell that puts another rule on top fails here until it does."""
    from functional_ast.adapters import Sampler, Selector
    from functional_ast.train.config import DEFAULT_RULE, TrainConfig

    ranking = tables.default_ranking()
    assert ranking, "no map cell is committed"
    assert TrainConfig().strategy == DEFAULT_RULE == ranking[0][0], ranking[:3]
    for door in (Selector, Sampler):
        assert door.__init__.__defaults__[0] == DEFAULT_RULE
    assert tables.readme_block(RESULTS.read_text(), tables.DEFAULT_START, tables.DEFAULT_END) == \
        tables.default_table(), "docs/results.md's ranking is stale: run python docs/tables.py --write"


def test_the_ranking_puts_a_rule_that_loses_somewhere_below_one_that_never_does(monkeypatch):
    def d(mean, half=0.5):
        return {"mean": mean, "low": mean - half, "high": mean + half, "n": 3}

    cells = [("clean", "short", {"a": d(2.0), "b": d(0.1)}, True, "pp", 2),  # a ranks first here ...
             ("noise20", "short", {"a": d(-3.0), "b": d(-0.2)}, True, "pp", 2),  # ... but loses here
             ("text-junk30", "short", {"a": d(0.6, 0.3), "b": d(-0.1)}, False, "bits/byte", 3)]  # lower is better
    monkeypatch.setattr(tables, "map_cells", lambda: cells)
    ranking = tables.default_ranking()
    assert [r[0] for r in ranking] == ["b", "a"]
    assert ranking[0][1:3] == (0, 4 / 3) and ranking[1][1] == 2  # text: a's +0.6 bits/byte loses
    assert ranking[1][3] == "−3.00 pp (20% label noise, short)"
