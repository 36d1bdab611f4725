"""Faster embedders against the reference on a profile's real steps: speed, cluster agreement and
the headline ratios, all measured in one run.

    .venv/bin/python benchmarks/embedder_agreement.py --profile real-qwen-math-1.5b

Needs the profile's samples (``./run_all.sh --profile P --until samples``). For every candidate
(``--candidates``; the reference, the profile's ``graphs.embedder``, always first):

- speed: the same ``--speed-texts`` distinct step sentences (a seeded random draw) encoded by each
  embedder after it is loaded (its one-off export or distillation is timed apart), texts/s and the
  speed-up over the reference;
- the step level exactly as stage ``graphs`` runs it (``rlsft.stages.graphs.step_analysis``, the
  profile's segmentation, K, scope, metric, seed; every distinct step embedded through the
  profile's embedding cache, so the reference's embeddings are the pipeline's);
- agreement per problem: the adjusted Rand index of the K-means assignments of the distinct steps
  against the reference's (same K and seed); the floor to read it against is the reference against
  itself with another K-means seed (row ``<reference> (k-means seed 1)``);
- the headline: raw beta ratio, node-count part and shape part per metric and comparison with 95%
  bootstrap CIs (``rlsft.ratios.decay_ratios``), and whether the candidate's ratio lies inside the
  reference's CI.

Writes ``results/benchmarks/embedder_agreement/{speed,ari,ratios,summary}.csv`` (atomically) and
prints the summary. ``--problems N`` keeps the first N problems of each benchmark (a quick look;
the profile's decision uses all of them).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rlsft import io, registry  # noqa: E402
from rlsft.embedders import get_embedder  # noqa: E402
from rlsft.ratios import decay_ratios  # noqa: E402
from rlsft.stages.graphs import embedding_cache, segment_settings, step_analysis  # noqa: E402
from rlsft.steps import segment_samples  # noqa: E402

DEFAULT_CANDIDATES = ["all-MiniLM-L6-v2@onnx", "all-MiniLM-L6-v2@onnx-int8", "all-MiniLM-L6-v2@onnx-int8/64",
                      "all-MiniLM-L6-v2@static"]
PROBLEM = ["family", "benchmark", "problem"]
log = logging.getLogger("embedder_agreement")


def ari_per_problem(ref_steps: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Adjusted Rand index per problem of two step tables' node assignments (one label per distinct
    step text; the tables come from the same samples and segmentation).

    >>> a = pd.DataFrame({"family": "f", "benchmark": "b", "problem": "0", "text": list("xyzw"), "node": [0, 0, 1, 1]})
    >>> ari_per_problem(a, a.assign(node=[5, 5, 2, 2]))["ari"].tolist()
    [1.0]
    """
    from sklearn.metrics import adjusted_rand_score

    key = [*PROBLEM, "text"]
    a = ref_steps.drop_duplicates(key)[[*key, "node"]]
    b = steps.drop_duplicates(key)[[*key, "node"]]
    m = a.merge(b, on=key, suffixes=("_ref", "_cand"))
    rows = [{**dict(zip(PROBLEM, k)), "n_distinct": len(g), "ari": adjusted_rand_score(g["node_ref"], g["node_cand"])}
            for k, g in m.groupby(PROBLEM, sort=True)]
    return pd.DataFrame(rows)


def speed(runs: list[tuple[str, str, dict]], texts: list[str], device: str) -> pd.DataFrame:
    """Load time and texts/s of each ``(label, embedder name, get_embedder options)`` on ``texts``
    (after a warm-up call); ``speedup`` against the first."""
    rows = []
    for label, name, opts in runs:
        t0 = time.perf_counter()
        emb = get_embedder(name, device=device, **opts)
        emb.encode(texts[:8])  # load, export / quantise / distil once
        t1 = time.perf_counter()
        emb.encode(texts)
        t2 = time.perf_counter()
        rows.append({"embedder": label, "seconds_build": t1 - t0, "n_texts": len(texts), "seconds": t2 - t1,
                     "texts_per_s": len(texts) / (t2 - t1)})
        log.info("speed %s: %.1f texts/s (build %.1f s)", label, rows[-1]["texts_per_s"], t1 - t0)
    out = pd.DataFrame(rows)
    out["speedup"] = out["texts_per_s"] / out["texts_per_s"].iloc[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="real-qwen-math-1.5b")
    ap.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES)
    ap.add_argument("--speed-only", nargs="*", default=["all-MiniLM-L6-v2@onnx"],
                    help="embedders timed but not run through the step level")
    ap.add_argument("--problems", type=int, default=None, help="first N problems per benchmark (quick look)")
    ap.add_argument("--speed-texts", type=int, default=2000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "embedder_agreement"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("rlsft.steps", "rlsft.stages.graphs", "rlsft.embedders"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    prof = registry.load_profile(args.profile)
    g = registry.effective_params(prof, "graphs")
    root = ROOT / "results" / prof["name"]
    samples_file = root / "samples" / "all_samples.parquet"
    if not samples_file.is_file():
        print(f"no samples at {samples_file}; fix: ./run_all.sh --profile {args.profile} --until samples", file=sys.stderr)
        return 2
    samples = pd.read_parquet(samples_file)
    if args.problems:
        firsts = (samples[PROBLEM].drop_duplicates().sort_values(PROBLEM)
                  .groupby(["family", "benchmark"]).head(args.problems))
        samples = samples.merge(firsts, on=PROBLEM)
    seed = int(prof.get("seed", 0))
    seg, cache = segment_settings(g), embedding_cache(type("Ctx", (), {"root": root})())
    names = [g.embedder] + [c for c in args.candidates if c != g.embedder]
    out = Path(args.out) / (f"first{args.problems}" if args.problems else "all")

    distinct = segment_samples(samples, **seg)["text"].drop_duplicates()
    texts = distinct.sample(min(args.speed_texts, len(distinct)), random_state=0).tolist()
    log.info("%s: %d problems, %d distinct steps; K=%d, scope %s, metric %s; speed on %d texts", prof["name"],
             samples[PROBLEM].drop_duplicates().shape[0], len(distinct), g.k, g.scope, g.metric, len(texts))
    former = f"{g.embedder} (batch 256, the former default)"
    timed = ([(n, n, {}) for n in names] + [(n, n, {}) for n in args.speed_only if n not in names]
             + ([(former, g.embedder, {"batch_size": 256})] if "@" not in g.embedder and g.embedder != "tfidf-char" else []))
    sp = speed(timed, texts, prof.get("device", "cpu"))

    runs = [(n, n, seed) for n in names] + [(f"{g.embedder} (k-means seed {seed + 1})", g.embedder, seed + 1)]
    steps, ratios, ari, wall = {}, [], [], {}
    for label, name, s in runs:
        t0 = time.perf_counter()
        res = step_analysis(samples, seg, get_embedder(name, device=prof.get("device", "cpu"), normalize=g.normalize),
                            cache, k=g.k, seed=s, scope=g.scope, metric=g.metric, sparsify_k=g.sparsify_k,
                            out_dir=out / "runs" / label.replace("/", "_").replace(" ", "_"), tables=("steps",),
                            progress=True)
        wall[label] = (time.perf_counter() - t0, float(res.timings["seconds_embed"].sum()),
                       int(res.timings["n_encoded"].sum()))
        steps[label] = pd.read_parquet(out / "runs" / label.replace("/", "_").replace(" ", "_") / "steps.parquet",
                                       columns=[*PROBLEM, "text", "node"])
        r = decay_ratios(res.decay, n_boot=args.n_boot, seed=seed)
        ratios.append(r.assign(embedder=label))
        if label != names[0]:
            ari.append(ari_per_problem(steps[names[0]], steps[label]).assign(embedder=label))
        log.info("%s: step level %.0f s (embedding %.0f s for %d new texts)", label, *wall[label])

    ratios = pd.concat(ratios, ignore_index=True)
    ari = pd.concat(ari, ignore_index=True)
    ref = ratios[ratios["embedder"] == names[0]].set_index(["family", "metric", "comparison"])
    ratios = ratios.join(ref[["ratio", "ci_low", "ci_high"]].add_prefix("ref_"), on=["family", "metric", "comparison"])
    inside = (ratios["ratio"] >= ratios["ref_ci_low"]) & (ratios["ratio"] <= ratios["ref_ci_high"])
    ratios["inside_ref_ci"] = np.where(ratios["ratio"].isna() | ratios["ref_ci_low"].isna(), "",
                                       np.where(inside, "yes", "no"))

    summary = sp.set_index("embedder")[["texts_per_s", "speedup", "seconds_build"]].reindex(
        [r[0] for r in runs] + [t[0] for t in timed if t[0] not in names])
    for label, (secs, emb_s, n_enc) in wall.items():
        summary.loc[label, ["seconds_step_level", "seconds_embedding", "texts_encoded"]] = [secs, emb_s, n_enc]
    a = ari.groupby("embedder")["ari"]
    summary["ari_median"], summary["ari_q25"], summary["ari_q75"] = a.median(), a.quantile(0.25), a.quantile(0.75)
    inside = ratios[ratios["inside_ref_ci"] != ""].groupby("embedder")["inside_ref_ci"]
    summary["ratios_inside_ref_ci"] = inside.apply(lambda x: f"{int((x == 'yes').sum())}/{len(x)}")
    summary["all_inside_ref_ci"] = inside.apply(lambda x: bool((x == "yes").all()))
    summary = summary.reset_index().rename(columns={"index": "embedder"})

    for name, df in (("speed", sp), ("ari", ari), ("ratios", ratios), ("summary", summary)):
        io.write_csv(out / f"{name}.csv", df)
    pd.set_option("display.width", 200)
    cols = ["embedder", "comparison", "metric", "ratio", "ci_low", "ci_high", "node_ratio", "shape_ratio", "inside_ref_ci"]
    print(ratios.dropna(subset=["ratio"])[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print()
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"\nwritten: {out}/{{speed,ari,ratios,summary}}.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
