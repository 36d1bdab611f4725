"""A quick probe of an organism design, the throwaway runs that ``docs/organism_log.md`` records:
train some variants with the data and train stages' functions, sample a few answers per held-out
problem, and print what the step level will see (no embedding, no clustering).

    .venv/bin/python benchmarks/organism_probe.py --data '{"teacher_check": 1.0}' --variants Base SFT RL

Per variant and evaluation set: pass@1, distinct step sentences per problem (the raw material of a
problem's reasoning graph: the node count the clusters can reach), where the walks stop (at the
goal, or past it: Base's coin flip between stopping at the goal and stopping after a memorised hop
count), distinct places named per
problem, distinct correct routes and distinct incorrect texts per problem, and pass@1 per
level (shortest distance, over all sets). ``--data`` and
``--train`` override the organism profile's stage parameters (JSON); ``--seed`` and
``--world-seed`` draw another world and evaluation problems. Trained models are kept under
``--cache`` keyed by everything that shapes them, so a probe that changes only SFT reuses Base.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rlsft import organism as O  # noqa: E402
from rlsft import task as T  # noqa: E402
from rlsft import tasks  # noqa: E402
from rlsft.backends import SamplingParams, transformers_generate  # noqa: E402
from rlsft.stages import data as data_stage  # noqa: E402
from rlsft.stages import samples as samples_stage  # noqa: E402
from rlsft.stages import train as train_stage  # noqa: E402

RECIPES = {"Base": {"recipe": "pretrain"}, "SFT": {"recipe": "sft", "from": "Base"},
           "RL": {"recipe": "grpo", "from": "Base"}, "SFT+RL": {"recipe": "grpo", "from": "SFT"}}
BASE_KEYS = ("n_places", "out_degree", "world_seed", "eval_sets", "base_per_problem", "base_styles", "n_facts")


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def probe_stats(world: T.World, problems: pd.DataFrame, texts: dict) -> dict:
    """Per-problem step statistics of ``texts`` ({problem id: [completion, ...]}), averaged."""
    rows = []
    for _, r in problems.iterrows():
        p = T.problem_from_row(r)
        outs = texts[p.id]
        checks = [T.check(world, p, t) for t in outs]
        steps = {ln.strip() for t in outs for ln in t.splitlines() if ln.strip()}
        places = {w for s in steps for w in s.rstrip(".").replace(",", " ").split() if w in world.edges}
        walks = [T.walk_outcome(world, p, t) for t in outs]
        rows.append({"benchmark": r["benchmark"], "level": p.level, "pass@1": sum(ok for _, ok in checks) / len(outs),
                     "walk ends at goal": sum(o["stop"] == "goal" for o in walks) / len(outs),
                     "walked past goal": sum(o["stop"] == "past goal" for o in walks) / len(outs),
                     "claims away from goal": sum(o["claims"] and o["stop"] != "goal" for o in walks) / len(outs),
                     "hops = distance": sum(o["hops"] == 0 for o in walks) / len(outs),
                     "takes a false road": sum(o["false_road"] for o in walks) / len(outs),
                     "distinct steps": len(steps), "places": len(places),
                     "correct routes": len({route for route, ok in checks if ok}),
                     "incorrect texts": len({t for t, (_, ok) in zip(outs, checks) if not ok}),
                     "lines": sum(len(t.splitlines()) for t in outs) / len(outs)})
    rows = pd.DataFrame(rows)
    by_level = rows.groupby("level")["pass@1"].mean().rename(lambda v: f"pass@1 level {v}")
    out = rows.drop(columns="level").groupby("benchmark").mean(numeric_only=True)
    return pd.concat([out, pd.DataFrame([by_level.to_numpy()] * len(out), index=out.index, columns=by_level.index)],
                     axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="{}", help="JSON overrides of stage data's parameters")
    ap.add_argument("--train", default="{}", help="JSON overrides of stage train's parameters")
    ap.add_argument("--variants", nargs="+", default=["Base", "SFT"], choices=list(RECIPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=16, help="samples per problem")
    ap.add_argument("--cache", default="/tmp/rlsft-organism-probe")
    ap.add_argument("--dump", help="also write every sampled text to this parquet file")
    args = ap.parse_args()

    dp = dataclasses.replace(data_stage.Params(), **json.loads(args.data))
    tp = dataclasses.replace(train_stage.Params(), **json.loads(args.train))
    sp = samples_stage.Params()
    d = tasks.build_navigation({}, dp, args.seed)  # the data stage's own builder
    world, evals = d["world"], d["problems"]
    data = {"base_corpus": d["base_corpus"]["text"], "sft": d["sft"], "train": d["train_problems"],
            "sft_texts": d["sft"]["completion"], "eval_texts": evals["prompt"]}
    tparams = {f.name: getattr(tp, f.name) for f in dataclasses.fields(tp)}
    base_id = key([getattr(dp, k) for k in BASE_KEYS], args.seed, tparams)
    sft_id = key(base_id, dp.teacher_per_problem, dp.teacher_slack, dp.teacher_explore, dp.teacher_check)
    ids = {"Base": base_id, "SFT": sft_id, "RL": key(base_id, "rl"), "SFT+RL": key(sft_id, "rl")}
    cache = Path(args.cache)
    todo = [v for v in O.training_order({v: RECIPES[v] for v in {*args.variants, *(
        RECIPES[v].get("from") for v in args.variants)} - {None}})]
    stats, dumped = {}, []
    for v in todo:
        out = cache / f"{v.replace('+', '_')}-{ids[v]}"
        parent = RECIPES[v].get("from")
        if not (out / "config.json").exists():
            t0 = time.time()
            rec = O.train_variant(v, RECIPES[v], tparams, data, out,
                                  cache / f"{parent.replace('+', '_')}-{ids[parent]}" if parent else None,
                                  args.seed, O.organism_reward(world))
            print(f"[probe] trained {v} in {time.time() - t0:.0f} s", flush=True)
            del rec
        if v not in args.variants:
            continue
        model, tok = O.load_model(out)
        params = SamplingParams(n=args.n, temperature=sp.temperature, top_p=sp.top_p,
                                max_new_tokens=sp.max_new_tokens, seed=args.seed)
        texts = {}
        for i in range(0, len(evals), 25):
            part = evals.iloc[i:i + 25]
            got = transformers_generate(model, tok, dict(zip(part["problem"], part["prompt"])), params)
            texts.update({k: [c.text for c in cs] for k, cs in got.items()})
        stats[v] = probe_stats(world, evals, texts)
        dumped += [{"variant": v, "problem": k, "text": t} for k, ts in texts.items() for t in ts]
    if args.dump:
        pd.DataFrame(dumped).merge(evals[["problem", "benchmark", "level", "start", "goal"]]).to_parquet(args.dump)
    table = pd.concat(stats, names=["variant"]).round(3)
    print(f"[probe] data {args.data} train {args.train} seed {args.seed}")
    print(table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
