"""Which of Base's answers carry RL's betweenness squeeze: RL/Base's β ratio recomputed with one kind
of Base answer left out (``docs/organism_log.md``, "Which of Base's answers carry RL's betweenness
squeeze").

    .venv/bin/python benchmarks/organism_betweenness_parts.py results/organism results/organism-confirm results/seeds/*-auto

For each analysed run folder (``graphs/steps.parquet`` beside the samples and the world), Base's
evaluation answers are sorted by :func:`rlsft.task.walk_outcome` into four kinds: the walk ends at the
goal and the Route line states it (``goal, walk stated``); it ends at the goal with another Route line
(``goal, misstated``, mostly ``misstate``'s habit); it ends away from the goal and claims arrival
(``claims away``: the count-stopper's failure); it ends away from the goal and claims nothing (``lost``).
Where Base walks any of its believed false roads (:func:`rlsft.task.false_roads`, the ``misbelief``
style), one more row leaves those answers out, whatever their kind.
Base's per-problem graphs are rebuilt from the run's own step nodes without one kind, and β RL/Base
(:func:`rlsft.ratios.decay_ratios`, the pipeline's ratio: median over problems, paired bootstrap CI,
node-count and shape parts) is computed against RL's unchanged graphs. A control row leaves out the
same number of Base answers as the ``lost`` row, drawn at random (``--seed``), since fewer answers alone
make a smaller graph. The first row, nothing left out, reproduces the run's own
``graphs/decay_ratios.csv``. Reads what the pipeline wrote, trains and samples nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from organism_base_stops import outcomes  # noqa: E402
from rlsft import graphs as G  # noqa: E402
from rlsft.ratios import decay_ratios  # noqa: E402

KINDS = ("goal, walk stated", "goal, misstated", "claims away", "lost")
METRICS = ("betweenness", "frequency")


def answer_kind(o: pd.DataFrame) -> pd.Series:
    """One of :data:`KINDS` per row of :func:`organism_base_stops.outcomes`.

    >>> answer_kind(pd.DataFrame({"stop": ["goal", "goal", "short", "elsewhere"], "route": ["walked", "no start",
    ...                                  "walked", "none"], "claims": [True, True, True, False]})).tolist()
    ['goal, walk stated', 'goal, misstated', 'claims away', 'lost']
    """
    at = o["stop"] == "goal"
    return pd.Series(np.where(at, np.where(o["route"] == "walked", KINDS[0], KINDS[1]),
                              np.where(o["claims"], KINDS[2], KINDS[3])), index=o.index)


def _decay(paths: dict, variant: str) -> pd.DataFrame:
    graphs = G.graphs_from_paths({k: v for k, v in paths.items() if k[1] == variant})
    d = G.decay_table_from_graphs(graphs)
    return d[d["metric"].isin(METRICS)]


def parts_table(run: Path, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per left-out kind (and the two references) of the run folder ``run``."""
    steps_path = run / "graphs" / "steps.parquet"
    if not steps_path.exists():
        raise FileNotFoundError(f"{steps_path} is missing: pass a run whose graphs stage has run "
                                f"(./run_all.sh --profile organism --until graphs)")
    o = outcomes(run, "Base")
    kind = dict(zip(zip(o["benchmark"], o["problem"].astype(str), o["sample"]), answer_kind(o)))
    steps = pd.read_parquet(steps_path)
    paths = G.paths_from_steps(steps[steps["variant"].isin(["Base", "RL"])])
    base_keys = [k for k in paths if k[1] == "Base"]
    kinds = {k: kind[(k[2], str(k[3]), k[4])] for k in base_keys}
    fake = dict(zip(zip(o["benchmark"], o["problem"].astype(str), o["sample"]), o["false_road"]))
    false_road = {k for k in base_keys if fake[(k[2], str(k[3]), k[4])]}
    rl = _decay(paths, "RL")
    n_lost = sum(v == "lost" for v in kinds.values())
    rng = np.random.default_rng(seed)
    random_out = set(rng.choice(len(base_keys), size=n_lost, replace=False).tolist())
    drops = [("nothing", set())] + [(k, {b for b in base_keys if kinds[b] == k}) for k in KINDS]
    if false_road:  # the misbelief style's answers (across kinds): those that take a false road
        drops.append(("takes a false road", false_road))
    drops.append((f"{n_lost} at random", {b for i, b in enumerate(base_keys) if i in random_out}))
    share = pd.Series(kinds).value_counts(normalize=True)
    rows = []
    for label, out in drops:
        kept = {k: v for k, v in paths.items() if k[1] == "RL" or k not in out}
        d = pd.concat([rl, _decay(kept, "Base")], ignore_index=True)
        r = decay_ratios(d, n_boot=n_boot, seed=seed, comparisons=[("RL", "Base")]).set_index("metric")
        row = {"run": run.name, "Base answers left out": label,
               "share of Base's answers": share.get(label, len(out) / len(base_keys))}
        for m in METRICS:
            x = r.loc[m]
            row[f"β RL/Base {m}"] = x["ratio"]
            row[f"{m} CI"] = f"[{x['ci_low']:.2f}, {x['ci_high']:.2f}]"
            if m == "betweenness":
                row.update({"node part": x["node_ratio"], "shape part": x["shape_ratio"],
                            "Base nodes": x["n_nodes_before"], "RL nodes": x["n_nodes_after"]})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["run", "Base answers left out"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="analysed run folders (results/<profile>, results/seeds/<run>)")
    ap.add_argument("--seed", type=int, default=0, help="draws the random control and the bootstrap")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    tables = [parts_table(r, args.seed, args.n_boot) for r in args.runs if r.is_dir()]
    if not tables:
        raise SystemExit("no run folder among the arguments")
    print(pd.concat(tables).round(3).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
