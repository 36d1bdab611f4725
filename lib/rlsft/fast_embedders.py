"""Faster runtimes of a local sentence-transformers encoder (BERT-like, mean pooling), for CPUs.

The reference (:class:`rlsft.embedders.SentenceTransformerEmbedder`) runs the model in PyTorch. The
runtimes here run the same weights another way, and each is a named embedder of its own
(``<model>@<runtime>``, :func:`rlsft.embedders.get_embedder`), with its own embedding cache, so the
step level can be measured with each and compared (``benchmarks/embedder_agreement.py``):

- ``onnx``: the model exported to ONNX from the local weights (``torch.onnx.export``) and run by
  ONNX Runtime in float32; the same function as the reference up to float rounding;
- ``onnx-int8``: that export with its weights dynamically quantised to int8
  (``onnxruntime.quantization.quantize_dynamic``): faster, not the same function;
- ``static``: a static embedding table distilled from the model (each vocabulary token encoded on
  its own, as model2vec does, in our own code: model2vec's distillation extra pins older
  transformers); a text is the weighted mean of its tokens' rows, no transformer at encode time.

``<model>@<runtime>/<N>`` also truncates every text to N tokens (the reference keeps the model's
``max_seq_length``, 256 for all-MiniLM-L6-v2). Every runtime builds what it needs once per model
and settings, offline, into :func:`artifact_dir` (atomic writes), and returns float32 rows that are
L2-normalised when the model's pipeline ends in ``Normalize`` (as all-MiniLM-L6-v2's does), or when
``normalize=True``.

>>> parse_runtime("all-MiniLM-L6-v2@onnx-int8/64")
('all-MiniLM-L6-v2', 'onnx-int8', 64)
>>> parse_runtime("all-MiniLM-L6-v2")
('all-MiniLM-L6-v2', None, None)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from rlsft import io as rio
from rlsft.progress import bar

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "onnx-int8", "static")
"""The runtimes ``<model>@<runtime>`` names (see the module docstring)."""

ONNX_OPSET = 17
STATIC_SIF = 1e-3
"""The smooth-inverse-frequency constant of the static table's token weights (model2vec's default):
a token of Zipf probability p weighs ``STATIC_SIF / (STATIC_SIF + p)``."""


class RuntimeUnavailableError(RuntimeError):
    """A runtime whose packages are not installed, or a spec that does not parse."""


def parse_runtime(name: str) -> tuple[str, str | None, int | None]:
    """``(model, runtime or None, max_tokens or None)`` of an embedder name ``model[@runtime[/N]]``.

    >>> parse_runtime("m@onnx/128")
    ('m', 'onnx', 128)
    >>> parse_runtime("m@gpu")
    Traceback (most recent call last):
    ...
    rlsft.fast_embedders.RuntimeUnavailableError: unknown embedder runtime 'gpu' in 'm@gpu'; choose from ('onnx', 'onnx-int8', 'static'), optionally with a token cap: 'm@onnx/64'
    """
    if "@" not in name:
        return name, None, None
    model, _, rest = name.rpartition("@")
    runtime, _, cap = rest.partition("/")
    if runtime not in RUNTIMES or not model or (cap and not (cap.isdigit() and int(cap) >= 2)):
        raise RuntimeUnavailableError(
            f"unknown embedder runtime {rest!r} in {name!r}; choose from {RUNTIMES}, optionally with a token cap: "
            f"'{model or 'all-MiniLM-L6-v2'}@onnx/64'")
    return model, runtime, int(cap) if cap else None


def artifact_dir() -> Path:
    """Where exported models and static tables are kept: ``$RLSFT_EMBEDDER_CACHE``, else
    ``~/.cache/rlsft/embedders`` (rebuilt offline from the local weights when missing)."""
    given = os.environ.get("RLSFT_EMBEDDER_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "rlsft" / "embedders"


def model_fingerprint(path: str | os.PathLike) -> str:
    """A short hash of a model folder's weight and config files (names and contents' sizes and hashes
    of the small ones), so an artifact built from other weights is never reused.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "config.json").write_text("{}")
    >>> len(model_fingerprint(d))
    16
    """
    h = hashlib.sha256()
    for f in rio.finished_files(path, recursive=True):
        if f.suffix in (".json", ".txt", ".safetensors", ".bin"):
            h.update(str(f.relative_to(path)).encode())
            h.update(str(f.stat().st_size).encode())
            if f.stat().st_size < 4_000_000:
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _require(module: str, what: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise RuntimeUnavailableError(f"{what} needs the package {module!r}, which is not installed; fix: "
                                      "./run_all.sh --setup (it is in the pinned set)") from e


def _pooling(path: Path) -> tuple[str, bool, int]:
    """``(pooling mode, ends in Normalize, max_seq_length)`` of a sentence-transformers folder."""
    modules = json.loads((path / "modules.json").read_text()) if (path / "modules.json").is_file() else []
    normalize = bool(modules) and str(modules[-1].get("type", "")).endswith("Normalize")
    mode = "mean"
    for m in modules:
        if str(m.get("type", "")).endswith("Pooling"):
            cfg = json.loads((path / m["path"] / "config.json").read_text())
            mode = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    cfg = path / "sentence_bert_config.json"
    max_len = int(json.loads(cfg.read_text()).get("max_seq_length", 256)) if cfg.is_file() else 256
    return mode, normalize, max_len


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Mean over the unmasked positions (or the first token) of ``hidden`` (batch, seq, dim).

    >>> _pool(np.ones((1, 3, 2)) * [[[1], [3], [9]]], np.array([[1, 1, 0]]), "mean").tolist()
    [[2.0, 2.0]]
    """
    if mode == "cls":
        return hidden[:, 0].astype(np.float32)
    m = mask[..., None].astype(np.float32)
    return ((hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def export_onnx(path: Path, out: Path) -> Path:
    """The encoder of the transformers model at ``path`` exported to ONNX (float32) at ``out``,
    inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (batch and length dynamic), output
    the last hidden state; written atomically, offline."""
    torch = _require("torch", "the ONNX export")
    _require("onnx", "the ONNX export")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()

    class Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with rio.atomic_path(out, ".onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on tracing; the output is checked in tests
        torch.onnx.export(Encoder(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp),
                          input_names=names, output_names=["hidden"], opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "length"} for n in [*names, "hidden"]})
    return out


def quantize_onnx(src: Path, out: Path) -> Path:
    """``src`` with its weights dynamically quantised to int8 (``quantize_dynamic``), at ``out``."""
    _require("onnxruntime", "int8 quantisation")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" advice printed through the root logger
    try:
        with rio.atomic_path(out, ".onnx") as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return out


class OnnxEmbedder:
    """A sentence-transformers encoder run by ONNX Runtime (``runtime`` ``onnx`` or ``onnx-int8``).

    Texts are sorted by length and encoded in batches of ``batch_size`` (little padding), truncated
    to ``max_tokens`` (default: the model's ``max_seq_length``), pooled as the model's pipeline says
    and L2-normalised when it ends in ``Normalize`` or ``normalize`` is set.
    """

    corpus_dependent = False

    def __init__(self, name: str, path: str, runtime: str = "onnx", max_tokens: int | None = None,
                 normalize: bool = False, batch_size: int = 32, threads: int | None = None):
        if runtime not in ("onnx", "onnx-int8"):
            raise ValueError(f"runtime must be 'onnx' or 'onnx-int8', got {runtime!r}")
        self.model, self.path, self.runtime = name, Path(path), runtime
        self.pooling, self.ends_normalized, self.model_max = _pooling(self.path)
        self.max_tokens = int(max_tokens or self.model_max)
        self.normalize, self.batch_size, self.threads = bool(normalize), int(batch_size), threads
        self.name = f"{name}@{runtime}" + (f"/{max_tokens}" if max_tokens else "")
        self.cache_id = self.name
        self._session = self._tokenizer = None

    def model_file(self) -> Path:
        """The ONNX file of this runtime, exported (and quantised) on first use."""
        folder = artifact_dir() / f"{Path(self.model).name}-{model_fingerprint(self.path)}"
        fp32 = folder / "model.onnx"
        if not fp32.is_file():
            log.info("exporting %s to ONNX (once) at %s", self.model, fp32)
            export_onnx(self.path, fp32)
        if self.runtime == "onnx":
            return fp32
        int8 = folder / "model-int8.onnx"
        if not int8.is_file():
            log.info("quantising %s to int8 (once) at %s", self.model, int8)
            quantize_onnx(fp32, int8)
        return int8

    def _load(self):
        if self._session is None:
            ort = _require("onnxruntime", f"embedder {self.name!r}")
            from transformers import AutoTokenizer

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(self.threads or os.cpu_count() or 1)
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.model_file()), opts, providers=["CPUExecutionProvider"])
            self._inputs = {i.name for i in self._session.get_inputs()}
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self._session

    @property
    def dim(self) -> int:
        return int(self.encode(["a"]).shape[1])

    def ends_in_normalize(self) -> bool:
        return self.ends_normalized

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 rows of ``texts``, in order."""
        texts = list(texts)
        session = self._load()
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = None
        for i in range(0, len(texts), self.batch_size):
            idx = order[i:i + self.batch_size]
            enc = self._tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                                  max_length=self.max_tokens, return_tensors="np")
            feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in self._inputs}
            if "token_type_ids" in self._inputs and "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            rows = _pool(session.run(None, feed)[0], enc["attention_mask"], self.pooling)
            if out is None:
                out = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
            out[idx] = rows
        if out is None:
            return np.zeros((0, 0), dtype=np.float32)
        return _unit(out) if (self.ends_normalized or self.normalize) else out

    def __repr__(self):
        return f"OnnxEmbedder({self.name!r}, normalize={self.normalize})"


def distill_static(path: Path, out: Path, name: str | None = None, batch_size: int = 512) -> Path:
    """A static table distilled from the encoder at ``path``: every vocabulary token encoded on its
    own (``[CLS] token [SEP]``, the model's pooling), weighted by smooth inverse frequency under a
    Zipf law over the token ids (:data:`STATIC_SIF`; model2vec's recipe, without its PCA), written as
    ``.npy`` (vocab size x dim, float32) at ``out``. Runs the ONNX float32 export (minutes on 2 cores)."""
    enc = OnnxEmbedder(name or Path(path).name, str(path), "onnx", batch_size=batch_size)
    session = enc._load()
    tok = enc._tokenizer
    V = len(tok)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    table = np.zeros((V, 0), dtype=np.float32)
    for i in bar(range(0, V, batch_size), desc="static table", unit="batch"):
        ids = np.arange(i, min(V, i + batch_size), dtype=np.int64)
        x = np.stack([np.full_like(ids, cls), ids, np.full_like(ids, sep)], axis=1)
        feed = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}
        rows = _pool(session.run(None, {k: v for k, v in feed.items() if k in enc._inputs})[0], feed["attention_mask"],
                     enc.pooling)
        if table.shape[1] == 0:
            table = np.zeros((V, rows.shape[1]), dtype=np.float32)
        table[ids] = rows
    p = 1.0 / (np.arange(V) + 1.0)
    p /= p.sum()
    table *= (STATIC_SIF / (STATIC_SIF + p))[:, None].astype(np.float32)
    with rio.atomic_path(out, ".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, table)
    return out


class StaticEmbedder:
    """A static embedding table distilled from a sentence-transformers encoder (:func:`distill_static`):
    a text is the mean of its tokens' rows (special tokens left out), then L2-normalised like the
    encoder's output. Hundreds of times faster than the encoder; whether its clusters give the same
    answer is what ``benchmarks/embedder_agreement.py`` measures."""

    corpus_dependent = False

    def __init__(self, name: str, path: str, max_tokens: int | None = None, normalize: bool = False):
        self.model, self.path = name, Path(path)
        _, self.ends_normalized, self.model_max = _pooling(self.path)
        self.max_tokens = int(max_tokens or self.model_max)
        self.normalize = bool(normalize)
        self.name = f"{name}@static" + (f"/{max_tokens}" if max_tokens else "")
        self.cache_id = self.name
        self._table = self._tokenizer = None

    def _load(self):
        if self._table is None:
            from transformers import AutoTokenizer

            f = artifact_dir() / f"{Path(self.model).name}-{model_fingerprint(self.path)}" / "static.npy"
            if not f.is_file():
                log.info("distilling a static table from %s (once) at %s", self.model, f)
                distill_static(self.path, f, self.model)
            self._table = np.load(f)
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self._table

    @property
    def dim(self) -> int:
        return int(self._load().shape[1])

    def ends_in_normalize(self) -> bool:
        return self.ends_normalized

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        table = self._load()
        ids = self._tokenizer(list(texts), add_special_tokens=False, truncation=True,
                              max_length=self.max_tokens)["input_ids"]
        out = np.zeros((len(ids), table.shape[1]), dtype=np.float32)
        for i, row in enumerate(ids):
            if row:
                out[i] = table[row].mean(axis=0)
        return _unit(out) if (self.ends_normalized or self.normalize) else out

    def __repr__(self):
        return f"StaticEmbedder({self.name!r}, normalize={self.normalize})"
