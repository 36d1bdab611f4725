"""Step-level stage on one paper-sized problem: the streaming pipeline vs the old code, per stage.

    PYTHONPATH=lib python benchmarks/bench_steps.py                 # small default, a few minutes on 2 cores
    PYTHONPATH=lib python benchmarks/bench_steps.py --full          # the paper's size (see below)
    PYTHONPATH=lib python benchmarks/bench_steps.py --real-embedder # all-MiniLM-L6-v2 instead of the fake

One problem group as the paper has it: 4 variants x ``--responses`` responses of 5,000-30,000
characters (synthetic, sentence-like: math-flavoured sentences of ~60 characters, about half of a
problem's steps repeats of earlier ones, as in real Qwen2.5-Math completions; seeded), K clusters,
1024-dim embeddings from a fast deterministic fake embedder (hashed word uni/bigrams projected to
1024 dims and L2-normalised), so the benchmark measures the pipeline, not a model.

Each measured run is its own subprocess (``--worker``), so its memory is its own. A stage's time is
the wall time spent inside it; its peak is the largest resident set size (RSS) of the process seen
while it ran (sampled every 5 ms, plus ``ru_maxrss`` when that rose during the stage), so it
includes the corpus and everything still held from earlier stages. Stages: segment, embed+cache
(cold cache: every distinct step encoded), k-means, graphs, metrics/decay, write (the saved
tables); ``embed (warm)`` is a second pass over the groups served from the cache.

- ``new``: ``rlsft.stages.graphs.step_analysis`` (streamed per group, float32, cache shards);
- ``old``: the code before streaming (``benchmarks/steps_reference.py``), as notebook 40 ran it:
  the whole table at once, float64 ``KMeans(n_init=10)``, graphs and metrics built twice.

The old code is too slow at the paper's size (float64 k-means++ and 10 restarts with K = 2000), so
the ratios compare old and new on a bounded sub-run (``--old-responses`` responses per variant,
same K); the new code alone also runs at the full size when ``--responses`` is larger. Prints the
tables and writes ``--out`` (CSV, one row per implementation, size and stage).

``--full``: 256 responses per variant, K = 2000, old vs new on 16 responses per variant.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "benchmarks")]

STAGES = ("segment", "embed+cache", "k-means", "graphs", "metrics/decay", "write")
VARIANTS = ("Base", "RL", "SFT", "SFT+RL")
REUSE = {"Base": 0.45, "RL": 0.65, "SFT": 0.35, "SFT+RL": 0.5}
"""Chance that a sentence repeats an earlier one of the problem (RL reuses most, SFT least)."""

# ------------------------------------------------------------------------------------ the corpus

_WORDS = ("we the of a to is and that so then let this value sum each term number equation side both "
          "gives find first next now since because therefore thus hence square root factor divide "
          "multiply subtract add check solve simplify substitute compute expand collect case wait "
          "answer result integer prime remainder modulo triangle circle area angle length ratio "
          "probability sequence series digit count ways pair product function polynomial").split()
_OPENERS = ("Let's", "We", "Now", "Then", "So", "Next", "Therefore", "Thus", "Wait", "First", "Since",
            "Hence", "Finally", "Note", "Recall")


def _sentence(rnd: random.Random) -> str:
    """A math-flavoured sentence of ~60 characters that the segmenter keeps whole."""
    words = [rnd.choice(_OPENERS)] + [rnd.choice(_WORDS) for _ in range(rnd.randint(4, 10))]
    if rnd.random() < 0.5:
        a, b, c = rnd.randint(1, 99), rnd.randint(1, 99), rnd.choice("xyzn")
        words.insert(rnd.randint(1, len(words)), f"${c}^2 + {a}{c} = {b}$")
    return " ".join(words) + rnd.choice(".....?!")


def make_samples(n_responses: int, min_chars: int = 5000, max_chars: int = 30000, seed: int = 0,
                 problems: int = 1):
    """The samples table of ``problems`` problems x 4 variants x ``n_responses`` responses (seeded)."""
    import pandas as pd

    rows = []
    for p in range(problems):
        rnd = random.Random(seed * 1000 + p)
        pool: list[str] = []
        for variant in VARIANTS:
            for s in range(n_responses):
                target, parts, n = rnd.randint(min_chars, max_chars), [], 0
                while n < target:
                    if pool and rnd.random() < REUSE[variant]:
                        sent = pool[int(len(pool) * rnd.random() ** 3)]  # early sentences are the common ones
                    else:
                        sent = _sentence(rnd)
                        pool.append(sent)
                    parts.append(sent + ("\n" if rnd.random() < 0.3 else " "))
                    n += len(sent) + 1
                rows.append(dict(family="bench", variant=variant, benchmark="paper-size", problem=f"p{p}",
                                 sample=s, text="".join(parts).strip(), correct=bool(s % 2)))
    return pd.DataFrame(rows)


class HashEmbedder:
    """Fast deterministic fake embedder: hashed word uni/bigrams (4096 buckets) x a fixed Gaussian
    projection to ``dim`` dimensions, L2-normalised. Similar sentences get similar vectors."""

    normalize = False
    batch_size = 256
    corpus_dependent = False

    def __init__(self, dim: int = 1024, seed: int = 0):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim, self.name, self.cache_id = dim, f"fake-hash-{dim}", f"fake-hash(dim={dim},seed={seed})"
        self._vec = HashingVectorizer(n_features=4096, ngram_range=(1, 2), alternate_sign=True, norm=None)
        self._proj = np.random.default_rng(seed).normal(size=(4096, dim)).astype(np.float32)

    def encode(self, texts):
        X = self._vec.transform(list(texts)).astype(np.float32)
        E = np.asarray(X @ self._proj, dtype=np.float32)
        E /= np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        return E


# ------------------------------------------------------------------------------- measurement


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StageMeter:
    """Wall time and peak RSS per stage; functions are wrapped so entering them switches the stage."""

    def __init__(self):
        self.stage = None
        self.enabled = True
        self.seconds = {s: 0.0 for s in STAGES}
        self.peak = {s: 0.0 for s in STAGES}
        self._stop = False
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop:
            st = self.stage
            rss = _rss_mb()
            if st is not None and self.stage is st:  # the stage did not change while reading
                self.peak[st] = max(self.peak[st], rss)
            time.sleep(0.005)

    def wrap(self, owner, name: str, stage: str):
        fn = getattr(owner, name)
        meter = self

        def wrapped(*a, **kw):
            if not meter.enabled:
                return fn(*a, **kw)
            prev, t0 = meter.stage, time.perf_counter()
            maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            meter.stage = stage
            try:
                return fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                meter.seconds[stage] += dt
                if prev is not None:
                    meter.seconds[prev] -= dt  # nested: the time is the inner stage's
                maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                meter.peak[stage] = max(meter.peak[stage], _rss_mb(), maxrss1 if maxrss1 > maxrss0 else 0.0)
                meter.stage = prev

        setattr(owner, name, wrapped)


def _embedder(args):
    if args.real_embedder:
        from rlsft.embedders import get_embedder

        return get_embedder("all-MiniLM-L6-v2")
    return HashEmbedder(args.dim)


def run_new(args, samples, tmp: Path, meter: StageMeter) -> dict:
    from rlsft import io as rio
    from rlsft import steps as S
    from rlsft.stages import graphs as G

    # wrapped where they are called: the step table's pieces in rlsft.steps, the rest in the stage module
    for owner, name, stage in [(S, "segment_samples", "segment"), (S, "embed_texts", "embed+cache"),
                               (S, "cluster_steps", "k-means"), (G, "graphs_from_steps", "graphs"),
                               (G, "graph_tables", "graphs"), (G, "graph_metrics", "metrics/decay"),
                               (G, "decay_table_from_graphs", "metrics/decay"),
                               (G, "node_metric_table", "metrics/decay"), (G.ParquetStream, "write", "write"),
                               (G.ParquetStream, "close", "write"), (rio, "write_csv", "write")]:
        meter.wrap(owner, name, stage)
    emb = _embedder(args)
    res = G.step_analysis(samples, None, emb, tmp / "cache", k=args.k, seed=0, out_dir=tmp / "out", progress=False)
    cl = res.clustering.iloc[0]  # groups are alike: the first one's method and K
    warm_s = n_warm = 0
    meter.enabled = False  # the warm pass is reported on its own
    for g in S.embedded_groups(samples, None, emb, tmp / "cache", progress=False):  # embed time only
        warm_s, n_warm = warm_s + g.info["seconds_embed"], n_warm + g.info["n_encoded"]
        del g
    return {"n_steps": int(res.clustering["n_steps"].sum()), "n_distinct": int(res.clustering["n_distinct"].sum()),
            "k_used": int(cl["k_used"]), "method": f"{cl['method']} (n_init={int(cl['n_init'])})", "warm_seconds": warm_s,
            "warm_encoded": int(n_warm)}


def run_old(args, samples, tmp: Path, meter: StageMeter) -> dict:
    import steps_reference as R

    from rlsft import io as rio

    for owner, name, stage in [(R, "segment_samples", "segment"), (R, "embed_unique", "embed+cache"),
                               (R, "cluster_steps", "k-means"), (R, "graphs_from_steps", "graphs"),
                               (R, "graph_tables", "graphs"), (R, "node_metric_table", "metrics/decay"),
                               (R, "decay_table", "metrics/decay"), (rio, "write_parquet", "write"),
                               (rio, "write_csv", "write")]:
        meter.wrap(owner, name, stage)
    emb = _embedder(args)
    out = tmp / "out"
    # notebook 40 before streaming
    steps_df, centroids = R.step_table(samples, None, emb, tmp / "cache", k=args.k, seed=0, progress=False)
    rio.write_parquet(out / "steps.parquet", steps_df)
    graphs = R.graphs_from_steps(steps_df, centroids)
    nodes, edges = R.graph_tables(graphs)
    rio.write_parquet(out / "nodes.parquet", nodes)
    rio.write_parquet(out / "edges.parquet", edges)
    rio.write_parquet(out / "node_metrics.parquet", R.node_metric_table(graphs))
    rio.write_csv(out / "decay_rates.csv", R.decay_table(steps_df, centroids, progress=False))
    infos = steps_df.attrs["clustering"]
    info = {**infos[0], "n_steps": sum(i["n_steps"] for i in infos), "n_distinct": sum(i["n_distinct"] for i in infos)}
    meter.enabled = False  # the warm pass is reported on its own
    t0 = time.perf_counter()
    R.embed_unique(steps_df["text"].tolist(), emb, tmp / "cache", progress=False)
    return {"n_steps": int(info["n_steps"]), "n_distinct": int(info["n_distinct"]), "k_used": int(info["k_used"]),
            "method": "KMeans float64 (n_init=10)", "warm_seconds": time.perf_counter() - t0, "warm_encoded": 0}


def worker(args) -> None:
    """One measured run; prints one JSON line."""
    samples = make_samples(args.responses, args.min_chars, args.max_chars, seed=args.seed, problems=args.problems)
    import networkx as nx

    from rlsft.graphs import betweenness

    betweenness(nx.gnp_random_graph(60, 0.1, seed=0, directed=True))  # warm-up: rustworkx's thread pool
    base = _rss_mb()
    meter = StageMeter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        extra = (run_new if args.worker == "new" else run_old)(args, samples, Path(tmp), meter)
    total = time.perf_counter() - t0
    meter._stop = True
    print(json.dumps({"impl": args.worker, "responses": args.responses, "k": args.k,
                      "dim": 384 if args.real_embedder else args.dim,
                      "embedder": "all-MiniLM-L6-v2" if args.real_embedder else "fake-hash",
                      "chars": int(samples["text"].str.len().sum()), "baseline_rss_mb": base,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "total_seconds": total, "seconds": meter.seconds, "peak_rss_mb": meter.peak, **extra}))


# ------------------------------------------------------------------------------------- driver


def _spawn(args, impl: str, responses: int, timeout: float) -> dict:
    argv = [sys.executable, __file__, "--worker", impl, "--responses", str(responses), "--k", str(args.k),
            "--dim", str(args.dim), "--min-chars", str(args.min_chars), "--max-chars", str(args.max_chars),
            "--seed", str(args.seed), "--problems", str(args.problems)] + (["--real-embedder"] if args.real_embedder else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib")] + [os.environ.get("PYTHONPATH", "")]))
    print(f"[bench_steps] {impl}: 4 x {responses} responses, K={args.k}, "
          f"{'all-MiniLM-L6-v2' if args.real_embedder else f'dim={args.dim}'} ...", flush=True)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "responses": responses, "error": f"did not finish in {timeout:.0f} s"}
    if p.returncode != 0:
        return {"impl": impl, "responses": responses, "error": f"exit {p.returncode}: {p.stderr[-2000:]}"}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"[bench_steps] {impl}: {res['total_seconds']:.1f} s, peak RSS {res['max_rss_mb']:.0f} MB", flush=True)
    return res


def rows_of(res: dict, label: str) -> list[dict]:
    if "error" in res:
        return [{"run": label, "impl": res["impl"], "responses": res["responses"], "stage": "all", "note": res["error"]}]
    out = [{"run": label, "impl": res["impl"], "responses": res["responses"], "k": res["k"], "dim": res["dim"],
            "n_steps": res["n_steps"], "n_distinct": res["n_distinct"], "k_used": res["k_used"], "method": res["method"],
            "stage": s, "seconds": res["seconds"][s], "peak_rss_mb": res["peak_rss_mb"][s]} for s in STAGES]
    out.append({**out[0], "stage": "embed (warm)", "seconds": res["warm_seconds"], "peak_rss_mb": float("nan"),
                "note": f"{res['warm_encoded']} encoded"})
    out.append({**out[0], "stage": "all", "seconds": res["total_seconds"], "peak_rss_mb": res["max_rss_mb"],
                "note": f"RSS before the stages (corpus loaded): {res['baseline_rss_mb']:.0f} MB"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--responses", type=int, default=12, help="responses per variant (paper: 256)")
    ap.add_argument("--old-responses", type=int, default=None, help="responses per variant of the old-vs-new sub-run")
    ap.add_argument("--k", type=int, default=200, help="K-means clusters (paper: 2000)")
    ap.add_argument("--dim", type=int, default=1024, help="embedding dimension of the fake embedder")
    ap.add_argument("--min-chars", type=int, default=5000)
    ap.add_argument("--max-chars", type=int, default=30000)
    ap.add_argument("--problems", type=int, default=1, help="problems (one clustering group each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="paper size: --responses 256 --k 2000 --old-responses 16")
    ap.add_argument("--real-embedder", action="store_true", help="all-MiniLM-L6-v2 (384 dims) instead of the fake")
    ap.add_argument("--skip-old", action="store_true", help="only the new code")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    ap.add_argument("--out", type=Path, default=None, help="CSV of all rows")
    ap.add_argument("--worker", choices=["new", "old"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.full:
        args.responses, args.k = 256, 2000
        args.old_responses = args.old_responses or 16
    if args.worker:
        worker(args)
        return 0
    import pandas as pd

    sub = min(args.old_responses or args.responses, args.responses)
    runs = {}
    if not args.skip_old:
        runs["old-sub"] = _spawn(args, "old", sub, args.timeout)
        runs["new-sub"] = _spawn(args, "new", sub, args.timeout)
    if args.skip_old or sub != args.responses:
        runs["new-full"] = _spawn(args, "new", args.responses, args.timeout)
    rows = [r for label, res in runs.items() for r in rows_of(res, label)]
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    if "old-sub" in runs and "error" not in runs["old-sub"] and "error" not in runs["new-sub"]:
        o = df[df.run == "old-sub"].set_index("stage")
        n = df[df.run == "new-sub"].set_index("stage")
        cmp = pd.DataFrame({"old_s": o["seconds"], "new_s": n["seconds"], "speedup": o["seconds"] / n["seconds"],
                            "old_peak_mb": o["peak_rss_mb"], "new_peak_mb": n["peak_rss_mb"],
                            "peak_ratio": o["peak_rss_mb"] / n["peak_rss_mb"]})
        r0 = runs["new-sub"]
        print(f"\nold vs new, same run: 4 x {sub} responses ({r0['chars']:,} chars, {r0['n_steps']:,} steps, "
              f"{r0['n_distinct']:,} distinct), K={args.k}, {r0['embedder']} dim={r0['dim']}; new k-means: {r0['method']}"
              + ("" if sub == args.responses else f"  [bounded sub-run: the old code is too slow at 4 x {args.responses}]"))
        print(cmp.round(2).to_string())
    elif "old-sub" in runs:
        print("\n" + "\n".join(f"{k}: {v.get('error')}" for k, v in runs.items() if "error" in v))
    if "new-full" in runs and "error" not in runs["new-full"]:
        r = runs["new-full"]
        f = df[df.run == "new-full"].set_index("stage")[["seconds", "peak_rss_mb", "note"]]
        print(f"\nnew code alone at 4 x {args.responses} responses ({r['chars']:,} chars, {r['n_steps']:,} steps, "
              f"{r['n_distinct']:,} distinct), K={args.k}, {r['embedder']} dim={r['dim']}; k-means: {r['method']}; "
              f"peak RSS {r['max_rss_mb']:.0f} MB (goal: under 8 GiB per group)")
        print(f.round(2).astype(object).fillna("").to_string())
    elif "new-full" in runs:
        print(f"\nnew-full: {runs['new-full'].get('error')}")
    if args.out:
        from rlsft.io import write_csv

        write_csv(args.out, df)
        print(f"\nwrote {args.out}")
    return 1 if any("error" in v for v in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
