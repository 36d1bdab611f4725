"""Profiles: YAML files in ``profiles/`` that say which models, data, sampling and analysis
settings a run uses. A profile may ``extends:`` another and override keys (dicts merge, everything
else is replaced). Validation is strict: an unknown key, an unknown profile or an unknown variant
is an error that names the problem and the fix. The ``stages:`` block is checked against the
stages' typed parameters by :func:`rlsft.registry.load_profile` (this module knows no stage).

Layout of a profile::

    description: "..."
    extends: organism          # optional; families merge with the parent's, `<family>: null` drops one
    seed: 0
    device: cpu                # cpu | cuda | auto (cuda where torch sees a GPU): training, sampling, embedding
    benchmark_folder: null     # offline JSONL copies of the paper's benchmarks (or null: the hub)
    families:
      <family>:
        label: "..."
        prompt: {style: raw | chat, system: "...", user: "{question}..."}
        variants:
          Base:   {recipe: pretrain}                  # trained by the train stage, or
          RL:     {model: org/id, revision: abc123}   # a hub id or a local path
          SFT:    {model: org/id, prompt: {...}}      # a variant's prompt replaces the family's
          SFT+RL: {completions: {aime24: runs/a.jsonl}}  # or import existing completions (rlsft.completions)
                                                      # a family may name only some variants (at least two)
          SFT+RL: {model: org/id, stop_token_ids: [151645], stop: ["..."]}  # ends besides the EOS
    stages:
      <stage>: {<parameter>: <value>, ...}            # rlsft.stages.<stage>.Params; injected into its notebook

>>> p = load_profile("ci")
>>> p["name"], sorted(p["families"])[:1]
('ci', ['organism'])
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from rlsft import VARIANTS
from rlsft.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO_ROOT / "profiles"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

TOP_KEYS = {"description", "extends", "seed", "device", "benchmark_folder", "families", "stages"}
FAMILY_KEYS = {"label", "prompt", "variants", "size"}
PROMPT_KEYS = {"style", "system", "user"}
VARIANT_KEYS = {"recipe", "from", "model", "revision", "tensor_parallel_size", "max_model_len", "dtype", "prompt",
                "completions", "stop_token_ids", "stop"}
SOURCE_KEYS = ("recipe", "model", "completions")
"""Where a variant's answers come from: trained here, a model to sample, or completions to import."""
RECIPES = {"pretrain", "sft", "grpo"}


COMPLETION_SUFFIXES = (".jsonl", ".json", ".parquet")
"""The file types ``completions:`` may name (see :mod:`rlsft.completions`)."""

__all__ = ["ConfigError", "load_profile", "validate_profile", "variant_specs", "completion_files",
           "resolve_completion_files", "stage_params", "get", "deep_merge", "available_profiles"]


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(name: str) -> Path:
    """``profiles/<name>.yaml``, or ``name`` itself when it is a path to a YAML file."""
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser().resolve()
    return PROFILE_DIR / f"{name}.yaml"


def _read(name: str) -> dict:
    path = profile_path(name)
    if not path.exists():
        raise ConfigError(f"unknown profile {name!r}: no file {path}; "
                          f"available profiles: {', '.join(available_profiles())}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"profile {name!r}: {path} is not valid YAML{at}: {problem}; fix the file "
                          f"(indentation and ':' after each key are the usual causes)") from None
    except OSError as exc:
        raise ConfigError(f"profile {name!r}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"profile {name!r}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile {name!r}: the file must hold a mapping of keys, got {type(data).__name__}")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    """Merge ``over`` onto ``base``: dicts merge key by key, anything else is replaced.

    >>> deep_merge({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2]})
    {'a': {'x': 1, 'y': 3}, 'b': [2]}
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_profile(name: str, validate: bool = True) -> dict:
    """Load a profile by name, resolving ``extends`` chains, and validate it."""
    chain, data = [name], _read(name)
    here = profile_path(name).parent  # a relative YAML path in 'extends' is relative to its profile
    while "extends" in data:
        parent = str(data.pop("extends"))
        if parent.endswith((".yaml", ".yml")) and not Path(parent).expanduser().is_absolute():
            parent = str((here / parent).resolve())
        if profile_path(parent) in [profile_path(n) for n in chain]:
            raise ConfigError(f"profile {name!r}: 'extends' loops through {' -> '.join(chain + [parent])}")
        chain.append(parent)
        pdata = _read(parent)
        here = profile_path(parent).parent
        child = data
        data = deep_merge({k: v for k, v in pdata.items()}, child)
        if "extends" in pdata and "extends" not in child:
            data["extends"] = pdata["extends"]
        elif "extends" not in pdata:
            data.pop("extends", None)
    # a family set to null (``families: {organism: null}``) removes an inherited family
    if isinstance(data.get("families"), dict):
        data["families"] = {k: v for k, v in data["families"].items() if v is not None}
    data["name"] = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    data["path"] = str(profile_path(name))
    data["chain"] = chain
    data.setdefault("seed", 0)
    data.setdefault("device", "cpu")
    data.setdefault("benchmark_folder", None)
    data.setdefault("stages", {})
    if validate:
        validate_profile(data)
    return data


def _unknown(where: str, keys, allowed) -> None:
    bad = sorted(set(keys) - set(allowed))
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {bad}; allowed keys: {sorted(allowed)}")


def _check_prompt(where: str, prompt) -> None:
    if prompt is not None and not isinstance(prompt, dict):
        raise ConfigError(f"{where}: prompt must be a mapping like {{style: raw, user: '{{question}}'}}")
    _unknown(f"{where}, prompt", prompt or {}, PROMPT_KEYS)
    style = (prompt or {}).get("style", "raw")
    if style not in ("raw", "chat"):
        raise ConfigError(f"{where}: prompt.style must be 'raw' or 'chat', got {style!r}")


def _check_stop(where: str, vs: dict) -> None:
    """A variant's stop settings: ``stop_token_ids`` a list of token ids, ``stop`` a list of strings.

    >>> _check_stop("v", {"stop_token_ids": [151645, 151643], "stop": ["</answer>"]})
    >>> _check_stop("v", {"stop_token_ids": "151645"})
    Traceback (most recent call last):
    ...
    rlsft.errors.ConfigError: v: stop_token_ids must be a list of token ids (ints >= 0), like [151645, 151643]; got '151645'
    """
    ids = vs.get("stop_token_ids", [])
    if not isinstance(ids, list) or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids):
        raise ConfigError(f"{where}: stop_token_ids must be a list of token ids (ints >= 0), like "
                          f"[151645, 151643]; got {ids!r}")
    stop = vs.get("stop", [])
    if not isinstance(stop, list) or any(not isinstance(x, str) or not x for x in stop):
        raise ConfigError(f"{where}: stop must be a list of non-empty strings, like ['<|im_start|>']; got {stop!r}")


def validate_profile(p: dict) -> None:
    """Raise ``ConfigError`` on anything a run would trip over later."""
    name = p.get("name", "?")
    _unknown(f"profile {name!r}", [k for k in p if k not in ("name", "chain", "path")], TOP_KEYS)
    if p.get("device") not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"profile {name!r}: device must be cpu, cuda or auto, got {p.get('device')!r}")
    fams = p.get("families") or {}
    if not isinstance(fams, dict):
        raise ConfigError(f"profile {name!r}: 'families' must be a mapping of family name: {{variants: ...}}, "
                          f"got {fams!r}")
    if not fams:
        raise ConfigError(f"profile {name!r}: 'families' is empty; name at least one model family")
    for fam, spec in fams.items():
        where = f"profile {name!r}, family {fam!r}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a mapping with 'variants'")
        _unknown(where, spec, FAMILY_KEYS)
        _check_prompt(where, spec.get("prompt"))
        variants = spec.get("variants") or {}
        if not isinstance(variants, dict):
            raise ConfigError(f"{where}: 'variants' must be a mapping like {{Base: {{recipe: pretrain}}, RL: ...}}, "
                              f"got {variants!r}")
        bad = sorted(set(variants) - set(VARIANTS))
        if bad:
            raise ConfigError(f"{where}: unknown variant(s) {bad}; the variants are {list(VARIANTS)}")
        if len(variants) < 2:
            raise ConfigError(f"{where}: names {len(variants)} variant(s) {sorted(variants)}; a family needs at least "
                              f"two of {list(VARIANTS)} to compare (the paper's four, or e.g. Base and RL)")
        for v, vs in variants.items():
            vwhere = f"{where}, variant {v!r}"
            if not isinstance(vs, dict):
                raise ConfigError(f"{vwhere}: must be a mapping like {{recipe: pretrain}} or {{model: org/id}}")
            _unknown(vwhere, vs, VARIANT_KEYS)
            if "prompt" in vs:  # a variant's own prompt replaces the family's
                _check_prompt(vwhere, vs["prompt"])
            _check_stop(vwhere, vs)
            sources = [k for k in SOURCE_KEYS if k in vs]
            if len(sources) != 1:
                raise ConfigError(f"{vwhere}: give exactly one of 'recipe' (train it), 'model' (hub id or path) or "
                                  f"'completions' (a file of existing completions, or {{benchmark: file}}); got "
                                  f"{sources or 'none'}")
            if "completions" in vs:
                resolve_completion_files(vs["completions"], Path(p.get("path", ".")).parent, f"{vwhere}, completions")
            if "recipe" in vs:
                if vs["recipe"] not in RECIPES:
                    raise ConfigError(f"{vwhere}: unknown recipe {vs['recipe']!r}; known: {sorted(RECIPES)}")
                if vs["recipe"] != "pretrain" and vs.get("from") not in variants:
                    raise ConfigError(f"{vwhere}: recipe {vs['recipe']!r} needs 'from' naming a variant of this "
                                      f"family ({sorted(variants)})")
    stages = p.get("stages")
    if stages is not None and not isinstance(stages, dict):
        raise ConfigError(f"profile {name!r}: 'stages' must be a mapping of stage: {{parameter: value}}, "
                          f"got {stages!r}")


def stage_params(profile: dict, stage: str) -> dict:
    """The parameters the profile injects into a stage's notebook."""
    return dict((profile.get("stages") or {}).get(stage) or {})


def variant_specs(profile: dict):
    """Yield ``(family, variant, spec)`` in profile order and the canonical variant order; a family
    may name only some of the variants (e.g. Base and RL)."""
    for fam, spec in profile["families"].items():
        for v in VARIANTS:
            if v in spec["variants"]:
                yield fam, v, spec["variants"][v]


def resolve_completion_files(spec: Any, base_dir: str | Path, where: str = "completions") -> dict[str, Path]:
    """``{benchmark or "": path}`` for a variant's ``completions`` entry, paths resolved.

    A plain path maps to ``""`` (the benchmark then comes from the file's ``benchmark`` column, or
    is named after the file). Relative paths are taken from ``base_dir`` (the profile's folder).

    >>> resolve_completion_files({"aime24": "/x/a.jsonl"}, "/p")
    {'aime24': PosixPath('/x/a.jsonl')}
    >>> resolve_completion_files("runs/out.json", "/p")
    {'': PosixPath('/p/runs/out.json')}
    """
    if isinstance(spec, (str, Path)):
        items = {"": spec}
    elif isinstance(spec, dict) and spec:
        items = dict(spec)
    else:
        raise ConfigError(f"{where}: must be a path or a mapping {{benchmark: path}}, got {spec!r}")
    out = {}
    for bench, p in items.items():
        if not isinstance(bench, str) or not isinstance(p, (str, Path)) or not str(p):
            raise ConfigError(f"{where}: entry {bench!r}: {p!r} must map a benchmark name to a file path")
        path = Path(p).expanduser()
        if not path.is_absolute():
            path = (Path(base_dir) / path).resolve()
        if path.suffix not in COMPLETION_SUFFIXES:
            raise ConfigError(f"{where}: {path} is not a {'/'.join(COMPLETION_SUFFIXES)} file; "
                              "export the completions as JSON lines, JSON or parquet")
        out[bench] = path
    return out


def completion_files(profile: dict, family: str, variant: str) -> dict:
    """``{benchmark: Path}`` of a variant that imports completions (``{}`` for the others)."""
    spec = profile["families"][family]["variants"][variant]
    if "completions" not in spec:
        return {}
    return resolve_completion_files(spec["completions"], Path(profile.get("path", ".")).parent,
                                    f"profile {profile.get('name')!r}, family {family!r}, variant {variant!r}, "
                                    f"completions")


def get(d: dict, dotted: str, default: Any = None) -> Any:
    """``get(p, "stages.sample.M")``: a nested lookup with a default.

    >>> get({"a": {"b": 1}}, "a.b"), get({}, "a.b", 2)
    (1, 2)
    """
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur
