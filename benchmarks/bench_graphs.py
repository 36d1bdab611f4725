"""Benchmarks for the step level (PAPER.md §6, §11).

1. Betweenness: ``rlsft.graphs.betweenness`` (rustworkx, including the networkx -> rustworkx
   conversion) vs ``networkx.betweenness_centrality(normalized=True)`` on random sparse digraphs of
   200 / 1000 / 2000 nodes (the paper's K = 2000 is the upper end). Also checks that they agree to
   1e-9. Writes ``results/benchmarks/betweenness.csv``.
2. Embedding: all-MiniLM-L6-v2 on a list of repeated step strings, encoding every string vs
   ``rlsft.embedders.embed_unique`` (each distinct string once), plus the cached rerun. Writes
   ``results/benchmarks/embedding.csv``.

Usage::

    PYTHONPATH=lib python benchmarks/bench_graphs.py [--sizes 200 1000 2000] [--skip-embedding]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("bench_graphs")


def _best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_betweenness(sizes, mean_out_degree: float, repeats: int, nx_repeats: int, seed: int):
    """Rows of (n_nodes, n_edges, seconds per backend, speedup, max |diff|)."""
    import networkx as nx
    import pandas as pd

    from rlsft.graphs import betweenness

    rows = []
    for n in sizes:
        G = nx.gnm_random_graph(n, int(round(mean_out_degree * n)), seed=seed, directed=True)
        t_rx, b_rx = _best_time(lambda: betweenness(G, backend="rustworkx"), repeats)
        t_nx, b_nx = _best_time(lambda: nx.betweenness_centrality(G, normalized=True), nx_repeats)
        diff = max(abs(b_rx[k] - b_nx[k]) for k in b_nx)
        rows.append(dict(n_nodes=n, n_edges=G.number_of_edges(), seconds_rustworkx=t_rx, seconds_networkx=t_nx,
                         speedup=t_nx / t_rx, max_abs_diff=diff,
                         threads=os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))))
        print(f"betweenness n={n:5d} m={G.number_of_edges():6d}: rustworkx {t_rx:8.4f}s  networkx {t_nx:8.3f}s  "
              f"ratio {t_nx / t_rx:7.1f}x  max|diff| {diff:.1e}", flush=True)
    return pd.DataFrame(rows)


def bench_embedding(n_texts: int, n_distinct: int, seed: int, batch_size: int):
    """Rows of (mode, n_texts, n_distinct, seconds, speedup vs encoding every string)."""
    import numpy as np
    import pandas as pd

    from rlsft.embedders import embed_unique, get_embedder

    rng = np.random.default_rng(seed)
    places = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "island", "jasper"]
    phrases = ["From {a} go to {b}.", "Move from {a} to {b}.", "Take the road from {a} to {b}.",
               "Dead end at {a}, back to {b}.", "Path so far: {a} {b} {a}."]
    distinct = []
    while len(distinct) < n_distinct:
        s = phrases[len(distinct) % len(phrases)].format(a=places[rng.integers(10)], b=places[rng.integers(10)])
        distinct.append(f"{s} ({len(distinct)})" if s in distinct else s)
    # Zipf-like reuse, as in sampled reasoning text: a few steps are very common
    p = 1.0 / np.arange(1, n_distinct + 1)
    texts = [distinct[i] for i in rng.choice(n_distinct, size=n_texts, p=p / p.sum())]
    n_unique = len(set(texts))

    emb = get_embedder("all-MiniLM-L6-v2", batch_size=batch_size)
    emb.encode(texts[:8])  # load the model outside the timings
    t_all, _ = _best_time(lambda: emb.encode(texts), 1)
    t_dedup, (_, e, inv) = _best_time(lambda: embed_unique(texts, emb, None, progress=False), 1)
    with tempfile.TemporaryDirectory() as cache:
        t_first, _ = _best_time(lambda: embed_unique(texts, emb, cache, progress=False), 1)
        t_cached, _ = _best_time(lambda: embed_unique(texts, emb, cache, progress=False), 1)
    ref = emb.encode(texts[:64])
    err = float(np.abs(e[inv[:64]] - ref).max())
    rows = [dict(mode=m, n_texts=n_texts, n_distinct=n_unique, seconds=t, speedup=t_all / t, max_abs_diff=err)
            for m, t in [("encode_all", t_all), ("dedup_no_cache", t_dedup), ("dedup_cache_cold", t_first),
                         ("dedup_cache_warm", t_cached)]]
    for r in rows:
        print(f"embedding {r['mode']:17s} {r['n_texts']} texts ({r['n_distinct']} distinct): "
              f"{r['seconds']:8.3f}s  ratio {r['speedup']:7.1f}x", flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000], help="graph sizes (nodes)")
    ap.add_argument("--mean-out-degree", type=float, default=4.0, help="edges per node of the random digraphs")
    ap.add_argument("--repeats", type=int, default=3, help="best-of repeats for rustworkx")
    ap.add_argument("--nx-repeats", type=int, default=1, help="best-of repeats for networkx (slow)")
    ap.add_argument("--embed-texts", type=int, default=5000, help="step strings in the embedding list")
    ap.add_argument("--embed-distinct", type=int, default=400, help="distinct step strings among them")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from rlsft.io import write_csv

    bt = bench_betweenness(args.sizes, args.mean_out_degree, args.repeats, args.nx_repeats, args.seed)
    print("wrote", write_csv(args.out / "betweenness.csv", bt))
    if not args.skip_embedding:
        em = bench_embedding(args.embed_texts, args.embed_distinct, args.seed, args.batch_size)
        print("wrote", write_csv(args.out / "embedding.csv", em))
    return 0


if __name__ == "__main__":
    sys.exit(main())
