"""Tests of the step table's methods: segmentation (rlsft.segmentation), embedders and the embedding
cache (rlsft.embedders), K-means nodes (rlsft.clustering) and the step table (rlsft.steps)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlsft import VARIANTS  # noqa: E402
from rlsft import clustering as K  # noqa: E402
from rlsft import embedders as E  # noqa: E402
from rlsft.clustering import _unique_rows, cluster_steps, kmeans_plusplus  # noqa: E402
from rlsft.embedders import (  # noqa: E402
    EmbedderUnavailableError,
    EmbeddingCache,
    cosine_noop_reason,
    embed_texts,
    embed_unique,
    get_embedder,
    outputs_unit_vectors,
)
from rlsft.segmentation import segment  # noqa: E402
from rlsft.steps import cluster_group, embedded_groups  # noqa: E402


class CountingEmbedder:
    """A fake embedder: 3-dim features of the text, counting the texts it is asked to encode."""

    name = "fake-counting"
    normalize = False
    batch_size = 4

    def __init__(self):
        self.calls, self.seen = 0, []

    def encode(self, texts):
        self.calls += 1
        self.seen.extend(texts)
        return np.array([[len(t), t.count("o"), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)


def toy_samples(n_samples: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hops = ["From amber go to birch.", "Move from birch to cedar.", "Take the road from cedar to delta.",
            "Dead end at delta, back to cedar.", "Path so far: amber birch cedar.", "Reached delta."]
    rows = []
    for v_i, variant in enumerate(VARIANTS):
        for problem in ("p0", "p1"):
            for s in range(n_samples):
                n = int(rng.integers(2, 6))
                text = "\n".join(hops[int(j)] for j in rng.integers(0, len(hops) - v_i % 2, size=n))
                rows.append(dict(family="toy", variant=variant, benchmark="b", problem=problem, sample=s,
                                 text=text, correct=bool(s % 2)))
    return pd.DataFrame(rows)


def step_table(samples, segment_kwargs, embedder, cache_dir, k, seed=0, scope="problem"):
    """The step table of every clustering group, one group at a time as stage ``graphs`` makes it:
    ``(steps, centroids by group key, clustering info per group)``."""
    parts, centroids, info = [], {}, []
    for group in embedded_groups(samples, segment_kwargs, embedder, cache_dir, scope=scope, progress=False):
        steps, C, ginfo = cluster_group(group, k=k, seed=seed)
        parts.append(steps)
        centroids[group.key] = C
        info.append(ginfo)
    return pd.concat(parts, ignore_index=True), centroids, info


# ---------------------------------------------------------------------------------------- segment


def test_segment_sentences_and_short_fragments():
    text = "First, add both sides. Then divide!  Ok.\n\nIs it 3.5? Yes.\n  ab  \nSo x = 2."
    assert segment(text) == ["First, add both sides.", "Then divide!", "Is it 3.5?", "So x = 2."]
    # min_chars: fragments of <= min_chars characters are dropped
    assert segment("Yes. Fine.", min_chars=3) == ["Yes.", "Fine."]
    assert segment("Yes. Fine.", min_chars=4) == ["Fine."]
    assert segment("") == [] and segment("\n\n") == []


def test_segment_latex_kept_together():
    text = r"We have $a. B$ here. Also \(x. Y\) there. And \[u. V\] too."
    assert segment(text) == [r"We have $a. B$ here.", r"Also \(x. Y\) there.", r"And \[u. V\] too."]
    multi = "Compute the sum.\n\\[\n1 + 2. Then\n= 3.\n\\]\nThat is all."
    assert segment(multi) == ["Compute the sum.", r"\[ 1 + 2. Then = 3. \]", "That is all."]
    env = "Solve:\n\\begin{align}\nx &= 1. Y \\\\\ny &= 2.\n\\end{align}\nDone here."
    assert segment(env)[1].startswith(r"\begin{align}") and segment(env)[1].endswith(r"\end{align}")
    # currency is not math (pandoc's rule for inline $)
    assert segment("It costs $5. Then $6 more.") == ["It costs $5.", "Then $6 more."]
    # an unclosed block is not allowed to swallow the text
    assert segment("Start.\n$$ x = 1\nNext line here.") == ["Start.", "$$ x = 1", "Next line here."]


def test_segment_abbreviations_and_enumerators():
    assert segment("Use e.g. the sum. See Fig. 3 for it. J. Smith said so.") == \
        ["Use e.g. the sum.", "See Fig. 3 for it.", "J. Smith said so."]
    assert segment("1. Expand the square.\n(b) Collect terms now.") == \
        ["1. Expand the square.", "(b) Collect terms now."]


def test_segment_line_rule_mask_and_determinism():
    text = "Step one. Step two.\nStep 12 of 345."
    assert segment(text, rule="line") == ["Step one. Step two.", "Step 12 of 345."]
    assert segment(text, mask_digits=True) == ["Step one.", "Step two.", "Step 0 of 0."]
    assert segment(text) == segment(text)
    with pytest.raises(ValueError, match="rule"):
        segment(text, rule="word")
    with pytest.raises(ValueError, match="str"):
        segment(None)


# ---------------------------------------------------------------------------------------- embedders


def test_embed_unique_dedups_and_caches(tmp_path):
    texts = ["aa b", "cc o", "aa b", "dd oo", "cc o", "aa b"]
    emb = CountingEmbedder()
    u, e, inv = embed_unique(texts, emb, tmp_path, progress=False)
    assert u == ["aa b", "cc o", "dd oo"]
    assert sorted(emb.seen) == sorted(u)  # each distinct text encoded exactly once
    assert [u[i] for i in inv] == texts
    assert e.dtype == np.float32 and e.shape == (3, 3)
    assert list(tmp_path.glob("*/shard-*.keys.npy"))

    again = CountingEmbedder()
    u2, e2, inv2 = embed_unique(texts, again, tmp_path, progress=False)
    assert again.calls == 0 and u2 == u and np.array_equal(e2, e) and np.array_equal(inv2, inv)

    more = CountingEmbedder()
    _, e3, _ = embed_unique(texts + ["new one"], more, tmp_path, progress=False)
    assert more.seen == ["new one"] and np.array_equal(e3[:3], e)

    normed = CountingEmbedder()
    normed.normalize = True  # another cache namespace
    embed_unique(texts, normed, tmp_path, progress=False)
    assert normed.calls > 0


def test_embed_unique_batches_and_chunks(tmp_path):
    texts = [f"text number {i}" for i in range(10)]
    emb = CountingEmbedder()
    _, e, _ = embed_unique(texts, emb, tmp_path, chunk_size=4, progress=False)
    assert emb.calls == 3 and e.shape == (10, 3)  # batches of 4 (batch_size), chunks of 4
    assert len(list(tmp_path.glob("*/shard-*.keys.npy"))) == 3
    with pytest.raises(ValueError, match="sequence"):
        embed_unique("one string", emb, None)


def test_tfidf_embedder_deterministic_and_cached(tmp_path):
    emb = get_embedder("tfidf-char", dim=16)
    texts = [f"Move from place{i % 7} to place{(i * 3) % 7}." for i in range(40)]
    a = emb.encode(texts)
    assert a.shape == (40, 16) and a.dtype == np.float32
    assert np.array_equal(a, get_embedder("tfidf-char", dim=16).encode(texts))
    u, e1, _ = embed_unique(texts, emb, tmp_path, progress=False)
    _, e2, _ = embed_unique(texts, emb, tmp_path, progress=False)
    assert np.array_equal(e1, e2) and len(list(tmp_path.glob("*/shard-*.keys.npy"))) == 1
    # a different corpus gets its own namespace (tf-idf is fitted on what it encodes)
    embed_unique(texts[:5], emb, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*/shard-*.keys.npy"))) == 2


def test_unavailable_model_names_fix():
    with pytest.raises(EmbedderUnavailableError, match="hf download BAAI/no-such-model"):
        get_embedder("BAAI/no-such-model")
    with pytest.raises(ValueError):
        get_embedder("")


def test_minilm_offline_384():
    emb = get_embedder("all-MiniLM-L6-v2")
    out = emb.encode(["From amber go to birch.", "Reached delta."])
    assert emb.name == "all-MiniLM-L6-v2"
    assert out.shape == (2, 384) and out.dtype == np.float32 and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------- K-means


def test_cluster_steps_seeded_capped_and_weighted():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.1, size=(30, 5)) for c in (0, 3, 6)])
    l1, c1 = cluster_steps(X, k=3, seed=1)
    l2, c2 = cluster_steps(X, k=3, seed=1)
    assert np.array_equal(l1, l2) and np.array_equal(c1, c2)
    assert len(set(l1[:30])) == len(set(l1[30:60])) == 1 and len(set(l1)) == 3
    assert l1[0] == 0  # labels numbered by first appearance
    # K capped at the number of distinct points
    Y = np.repeat(X[:4], 5, axis=0)
    lab, C = cluster_steps(Y, k=50)
    assert C.shape == (4, 5) and len(set(lab)) == 4
    # cosine: scaled copies are one point
    lab, C = cluster_steps(np.array([[1.0, 0], [2.0, 0], [0, 1.0]]), k=3, metric="cosine")
    assert lab.tolist() == [0, 0, 1] and np.allclose(np.linalg.norm(C, axis=1), 1)
    with pytest.raises(ValueError, match="k must"):
        cluster_steps(X, k=0)
    with pytest.raises(ValueError, match="metric"):
        cluster_steps(X, k=2, metric="manhattan")
    with pytest.raises(ValueError, match="non-empty"):
        cluster_steps(np.zeros((0, 3)), k=2)


def test_cluster_steps_thread_limit_gives_the_same_clusters():
    from threadpoolctl import threadpool_info

    X = np.random.default_rng(5).normal(size=(300, 8)).astype(np.float32)
    seen = []

    import rlsft.clustering as clustering
    real_fit = clustering._fit

    def spy(*a, **kw):
        seen.append(max((p["num_threads"] for p in threadpool_info()), default=None))
        return real_fit(*a, **kw)

    clustering._fit = spy
    try:
        one = cluster_steps(X, k=12, seed=2, threads=1)
        every = cluster_steps(X, k=12, seed=2, threads=None)
    finally:
        clustering._fit = real_fit
    assert np.array_equal(one[0], every[0]) and np.allclose(one[1], every[1], atol=1e-5)
    assert seen[0] == 1  # the pools were capped inside the fit
    with pytest.raises(ValueError, match="threads"):
        cluster_steps(X, k=2, threads=0)


def test_cluster_minibatch_path_is_seeded():
    X = np.random.default_rng(1).normal(size=(400, 4))
    a = cluster_steps(X, k=5, seed=3, minibatch_above=100)
    b = cluster_steps(X, k=5, seed=3, minibatch_above=100)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ---------------------------------------------------------------------------------------- step table


def test_step_table_pooled_shared_nodes_and_deterministic(tmp_path):
    samples = toy_samples()
    emb = CountingEmbedder()
    df, C, info = step_table(samples, {"min_chars": 5}, emb, tmp_path, k=4, seed=0)
    assert list(df.columns[:8]) == ["family", "variant", "benchmark", "problem", "sample", "step_idx",
                                    "text", "node"]
    assert set(C) == {("toy", "b", "p0"), ("toy", "b", "p1")}
    assert (df["node"] >= 0).all() and df["node"].max() < 4
    # one clustering per problem shared by the variants: the same text gets the same node
    per_text = df.groupby(["problem", "text"])["node"].nunique()
    assert (per_text == 1).all()
    assert set(df["variant"]) == set(VARIANTS)
    assert {i["k_used"] for i in info} == {4} and all(i["variants"] for i in info)

    calls_before = emb.calls
    df2, C2, _ = step_table(samples, {"min_chars": 5}, emb, tmp_path, k=4, seed=0)
    assert emb.calls == calls_before  # all embeddings from the cache
    pd.testing.assert_frame_equal(df, df2)
    assert all(np.array_equal(C[key], C2[key]) for key in C)

    dfb, Cb, _ = step_table(samples, None, emb, tmp_path, k=100, scope="benchmark")
    assert set(Cb) == {("toy", "b")}
    assert Cb[("toy", "b")].shape[0] == dfb["text"].nunique()  # K capped at distinct steps
    with pytest.raises(ValueError, match="scope"):
        step_table(samples, None, emb, tmp_path, k=4, scope="dataset")
    with pytest.raises(ValueError, match="lack columns"):
        step_table(samples.drop(columns="text"), None, emb, tmp_path, k=4)


# ---------------------------------------------------------------------------------------- the cache


def test_cache_reruns_from_disk_without_encoding(tmp_path):
    """A fresh process (the per-process index dropped) finds every row on disk: nothing encoded."""
    texts = [f"sentence {i} " + "x" * (i % 7) for i in range(50)]
    first = CountingEmbedder()
    e1, n1 = E.embed_texts(texts, first, tmp_path, chunk_size=8)
    assert n1 == 50 and e1.dtype == np.float32
    E._CACHES.clear()
    again = CountingEmbedder()
    e2, n2 = E.embed_texts(texts[::-1], again, tmp_path)
    assert n2 == 0 and again.calls == 0 and np.array_equal(e2, e1[::-1])
    cache = E.open_cache(tmp_path, again)
    assert len(cache) == 50 and cache.dim == 3
    # the index holds 16 bytes per text (prefix, shard, row), never the rows themselves
    assert cache._prefix.nbytes + cache._shard.nbytes // 4 * 4 + cache._row.nbytes <= 50 * 20
    assert not any(isinstance(v, np.ndarray) and v.ndim == 2 for v in vars(cache).values())


def test_cache_lookup_confirms_full_key_on_prefix_collision(tmp_path):
    cache = EmbeddingCache(tmp_path / "ns")
    a = np.zeros((1, 32), dtype=np.uint8)
    b = a.copy()
    b[0, 31] = 1  # same 8-byte prefix, another key
    cache.add(a, np.array([[1.0, 2.0]], dtype=np.float32))
    hit, rows = cache.lookup(np.concatenate([b, a]))
    assert hit.tolist() == [False, True] and rows.tolist() == [[1.0, 2.0]]
    cache.add(b, np.array([[3.0, 4.0]], dtype=np.float32))
    hit, rows = cache.lookup(np.concatenate([b, a]))
    assert hit.tolist() == [True, True] and rows.tolist() == [[3.0, 4.0], [1.0, 2.0]]
    with pytest.raises(ValueError, match="mixes dimensions"):
        cache.add(np.full((1, 32), 7, dtype=np.uint8), np.zeros((1, 5), dtype=np.float32))


def test_cache_converts_the_old_npz_chunks(tmp_path):
    from rlsft import io as rio

    texts = ["old one here", "old two here"]
    emb = CountingEmbedder()
    ns = E._cache_namespace(tmp_path, emb, None)
    ns.mkdir(parents=True)
    rows = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    np.savez(ns / "chunk-abc.npz", keys=np.asarray([rio.sha256_text(t) for t in texts], dtype="<U64"), emb=rows)
    got, n_new = E.embed_texts(texts, emb, tmp_path)
    assert n_new == 0 and emb.calls == 0 and np.array_equal(got, rows)
    assert not list(ns.glob("chunk-*.npz")) and list(ns.glob("shard-*.keys.npy"))


def test_embed_texts_one_call_per_chunk_sorted_by_length(tmp_path):
    """Misses are sent longest first, in one encode call per chunk (sentence-transformers batches inside)."""
    texts = ["a" * n + "b" for n in (3, 9, 1, 7, 5, 11)]
    emb = CountingEmbedder()  # batch_size 4
    embed_texts(texts, emb, tmp_path)
    assert emb.calls == 1 and emb.seen == sorted(texts, key=len, reverse=True)
    emb2 = CountingEmbedder()
    out, n_new = embed_texts(texts + ["zz" * 20, "q" * 30], emb2, tmp_path, chunk_size=1)
    assert n_new == 2 and emb2.calls == 1  # chunks are whole batches (4 texts)
    assert out.shape == (8, 3)


# ---------------------------------------------------------------------------------------- K-means methods


def test_cluster_steps_float32_and_methods(monkeypatch):
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.1, size=(40, 6)) for c in (0, 3, 6)])  # float64 input
    seen = []
    fit = KMeans.fit

    def spy(self, X, y=None, sample_weight=None):
        seen.append(X.dtype)
        return fit(self, X, y, sample_weight=sample_weight)

    monkeypatch.setattr(KMeans, "fit", spy)
    lab, C, info = cluster_steps(X, k=3, seed=0, return_info=True)
    assert C.dtype == np.float32 and set(seen) == {np.dtype(np.float32)} and len(seen) == 10
    assert info["method"] == "kmeans" and info["n_init"] == 10 and info["k_used"] == 3
    assert len(set(lab[:40])) == len(set(lab[40:80])) == len(set(lab[80:])) == 1
    # above the exact-work budget without faiss: one restart
    monkeypatch.setattr(K, "faiss_available", lambda: False)
    seen.clear()
    lab1, _, info1 = cluster_steps(X, k=3, seed=0, exact_work=10, return_info=True)
    assert info1["method"] == "kmeans-1" and len(seen) == 1 and len(set(lab1)) == 3
    lab2, _, info2 = cluster_steps(X, k=3, seed=0, minibatch_above=50, return_info=True)
    assert info2["method"] == "minibatch" and len(set(lab2)) == 3
    assert cluster_steps(X[:2], k=3, return_info=True)[2]["method"] == "identity"
    with pytest.raises(ValueError, match="method"):
        cluster_steps(X, k=3, method="agglomerative")


@pytest.mark.skipif(not K.faiss_available(), reason="faiss not installed")
def test_cluster_steps_faiss_path():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.1, size=(200, 8)) for c in (0, 3, 6)]).astype(np.float32)
    lab, C, info = cluster_steps(X, k=3, seed=0, exact_work=10, return_info=True)
    assert info["method"] == "faiss" and C.dtype == np.float32 and lab[0] == 0
    assert len(set(lab[:200])) == len(set(lab[200:400])) == len(set(lab[400:])) == 1
    again = cluster_steps(X, k=3, seed=0, exact_work=10)
    assert np.array_equal(again[0], lab)


def test_kmeans_plusplus_weighted_distinct_and_seeded():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    a = kmeans_plusplus(X, 20, seed=4)
    assert len(set(a.tolist())) == 20 and np.array_equal(a, kmeans_plusplus(X, 20, seed=4))
    w = np.full(300, 1e-9)
    w[7] = 1.0
    assert kmeans_plusplus(X, 1, seed=0, sample_weight=w).tolist() == [7]  # all mass on row 7


def test_unique_rows_first_appearance():
    X = np.array([[2, 2], [1, 1], [2, 2], [0, 0], [1, 1]], dtype=np.float32)
    first, inv = _unique_rows(X)
    assert first.tolist() == [0, 1, 3] and inv.tolist() == [0, 1, 0, 2, 1]


def test_unit_vector_detection_reads_the_modules():
    minilm = get_embedder("all-MiniLM-L6-v2")
    assert outputs_unit_vectors(minilm) is True and minilm._model is None  # from modules.json, not loaded
    assert "Normalize module" in cosine_noop_reason(minilm)
    assert cosine_noop_reason(minilm, sparsify_k=10) is None  # renormalised centroids move edge distances
    assert cosine_noop_reason(get_embedder("tfidf-char", dim=4)) is None
    assert outputs_unit_vectors(CountingEmbedder()) is None
    norm = CountingEmbedder()
    norm.normalize = True
    assert cosine_noop_reason(norm).startswith("n/a: embeddings are unit vectors (normalize=True)")


def test_cache_survives_removed_shards(tmp_path):
    """A shard deleted under a running process is re-encoded, not an error."""
    texts = ["alpha beta gamma", "delta epsilon"]
    E.embed_texts(texts, CountingEmbedder(), tmp_path)
    for f in tmp_path.glob("*/shard-*"):
        f.unlink()
    again = CountingEmbedder()
    out, n_new = E.embed_texts(texts, again, tmp_path)
    assert n_new == 2 and out.shape == (2, 3)
