"""Profile loading and validation (rlsft.config for the structure, rlsft.registry for the typed,
ranged stage parameters): every user mistake is a ConfigError that names the problem, its full path
and the fix. Fast: no papermill, profiles are written to tmp_path and loaded by path."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from rlsft import VARIANTS
from rlsft import config as C
from rlsft import registry as R
from rlsft.registry import declared_parameters

REPO = Path(__file__).resolve().parents[1]

ORGANISM_FAMILY = {
    "label": "Test family",
    "prompt": {"style": "raw", "user": "{question}"},
    "variants": {
        "Base": {"recipe": "pretrain"},
        "RL": {"recipe": "grpo", "from": "Base"},
        "SFT": {"recipe": "sft", "from": "Base"},
        "SFT+RL": {"recipe": "grpo", "from": "SFT"},
    },
}


def base_profile() -> dict:
    return {"description": "test", "seed": 0, "device": "cpu",
            "families": {"fam": copy.deepcopy(ORGANISM_FAMILY)}}


def write(tmp_path: Path, name: str, data: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def load(tmp_path: Path, data: dict, name: str = "p") -> dict:
    return R.load_profile(write(tmp_path, name, data))


# ------------------------------------------------------------------------------------ happy path

def test_valid_profile_by_path(tmp_path):
    path = write(tmp_path, "mine", base_profile())
    p = C.load_profile(path)
    assert p["name"] == "mine"
    assert Path(p["path"]) == Path(path).resolve()
    assert p["chain"] == [path]
    assert p["seed"] == 0 and p["device"] == "cpu" and p["benchmark_folder"] is None
    assert p["stages"] == {}
    assert [v for _, v, _ in C.variant_specs(p)] == list(VARIANTS)


def test_yml_suffix_is_a_path_too(tmp_path):
    path = tmp_path / "other.yml"
    path.write_text(yaml.safe_dump(base_profile()))
    assert C.load_profile(str(path))["name"] == "other"


def test_all_committed_profiles_load():
    names = C.available_profiles()
    assert {"organism", "ci"} <= set(names)
    for name in names:
        p = R.load_profile(name)
        assert p["name"] == name and p["chain"][0] == name


# ------------------------------------------------------------------------------ unknown profile

def test_unknown_profile_names_available_ones():
    with pytest.raises(C.ConfigError) as ei:
        C.load_profile("no-such-profile")
    msg = str(ei.value)
    assert "unknown profile 'no-such-profile'" in msg
    for name in C.available_profiles():
        assert name in msg
    assert "organism" in msg and "ci" in msg


def test_missing_yaml_path_is_a_config_error(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown profile"):
        C.load_profile(str(tmp_path / "absent.yaml"))


def test_profile_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(C.ConfigError, match="mapping"):
        C.load_profile(str(path))


# --------------------------------------------------------------------------------- unknown keys

def test_unknown_top_level_key(tmp_path):
    data = base_profile() | {"colour": "red"}
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "unknown key(s) ['colour']" in msg
    assert "allowed keys" in msg and "families" in msg and "stages" in msg


def test_unknown_family_key(tmp_path):
    data = base_profile()
    data["families"]["fam"]["colour"] = "red"
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "family 'fam'" in msg and "['colour']" in msg and "variants" in msg


def test_unknown_variant_key(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"]["lr"] = 1
    with pytest.raises(C.ConfigError, match=r"variant 'RL'.*\['lr'\]"):
        load(tmp_path, data)


@pytest.mark.parametrize("key, value, message", [
    ("stop_token_ids", 151645, "stop_token_ids must be a list of token ids"),
    ("stop_token_ids", ["151645"], "stop_token_ids must be a list of token ids"),
    ("stop_token_ids", [-1], "stop_token_ids must be a list of token ids"),
    ("stop_token_ids", [True], "stop_token_ids must be a list of token ids"),
    ("stop", "<|im_end|>", "stop must be a list of non-empty strings"),
    ("stop", [""], "stop must be a list of non-empty strings"),
    ("stop", [151645], "stop must be a list of non-empty strings"),
])
def test_bad_stop_settings(tmp_path, key, value, message):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"][key] = value
    with pytest.raises(C.ConfigError, match=rf"variant 'RL': {message}"):
        load(tmp_path, data)


def test_stop_settings_are_valid_variant_keys(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"].update(stop_token_ids=[151645, 151643], stop=["<|im_start|>"])
    spec = load(tmp_path, data)["families"]["fam"]["variants"]["RL"]
    assert spec["stop_token_ids"] == [151645, 151643] and spec["stop"] == ["<|im_start|>"]


def test_unknown_prompt_key_and_style(tmp_path):
    data = base_profile()
    data["families"]["fam"]["prompt"]["colour"] = "red"
    with pytest.raises(C.ConfigError, match=r"prompt.*\['colour'\]"):
        load(tmp_path, data)
    data = base_profile()
    data["families"]["fam"]["prompt"]["style"] = "fancy"
    with pytest.raises(C.ConfigError, match="prompt.style must be 'raw' or 'chat'"):
        load(tmp_path, data)


def test_bad_device(tmp_path):
    with pytest.raises(C.ConfigError, match="device must be cpu, cuda or auto"):
        load(tmp_path, base_profile() | {"device": "tpu"})


def test_no_families(tmp_path):
    with pytest.raises(C.ConfigError, match="'families' is empty"):
        load(tmp_path, base_profile() | {"families": {}})


# ------------------------------------------------------------------------------------- variants

def test_unknown_variant_name(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["DPO"] = {"recipe": "pretrain"}
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "unknown variant(s) ['DPO']" in msg
    assert all(v in msg for v in VARIANTS)


def test_a_family_may_name_some_variants_but_at_least_two(tmp_path):
    data = base_profile()
    for v in ("SFT", "SFT+RL"):
        del data["families"]["fam"]["variants"][v]
    p = load(tmp_path, data)
    assert [v for _, v, _ in C.variant_specs(p)] == ["Base", "RL"]
    del data["families"]["fam"]["variants"]["RL"]
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    assert "names 1 variant(s) ['Base']; a family needs at least two" in str(ei.value)


def test_variant_with_both_recipe_and_model(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"] = {"recipe": "grpo", "from": "Base", "model": "org/id"}
    with pytest.raises(C.ConfigError, match="exactly one of 'recipe'.*'model'.*'completions'"):
        load(tmp_path, data)


def test_variant_with_neither_recipe_nor_model(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"] = {"revision": "abc"}
    with pytest.raises(C.ConfigError, match="exactly one of 'recipe'"):
        load(tmp_path, data)


def test_unknown_recipe(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"] = {"recipe": "dpo", "from": "Base"}
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "unknown recipe 'dpo'" in msg
    assert all(r in msg for r in C.RECIPES)


@pytest.mark.parametrize("recipe", ["sft", "grpo"])
def test_recipe_without_from(tmp_path, recipe):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"] = {"recipe": recipe}
    with pytest.raises(C.ConfigError, match=f"recipe '{recipe}' needs 'from'"):
        load(tmp_path, data)


def test_recipe_from_unknown_variant(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"] = {"recipe": "grpo", "from": "Chat"}
    with pytest.raises(C.ConfigError, match="needs 'from' naming a variant"):
        load(tmp_path, data)


def test_model_variant_is_valid(tmp_path):
    data = base_profile()
    data["families"]["fam"]["variants"]["RL"] = {"model": "org/id", "revision": "abc"}
    p = load(tmp_path, data)
    assert p["families"]["fam"]["variants"]["RL"]["model"] == "org/id"


# --------------------------------------------------------------------------------------- stages

def test_undeclared_stage_parameter_names_declared_ones(tmp_path):
    data = base_profile() | {"stages": {"samples": {"M": 4, "num_samples": 4}}}
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "stages.samples: unknown parameter(s) ['num_samples']" in msg
    assert "declared parameters" in msg
    declared = declared_parameters("samples")
    assert "M" in declared
    for name in declared:
        assert repr(name) in msg, f"declared parameter {name} not named in: {msg}"


def test_profile_and_results_root_are_not_stage_parameters(tmp_path):
    data = base_profile() | {"stages": {"data": {"results_root": "elsewhere"}}}
    with pytest.raises(C.ConfigError, match=r"stages.data: unknown parameter\(s\) \['results_root'\]"):
        load(tmp_path, data)


def test_unknown_stage(tmp_path):
    data = base_profile() | {"stages": {"sampling": {"M": 4}}}
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, data)
    msg = str(ei.value)
    assert "unknown stage 'sampling'" in msg
    assert "'samples'" in msg and "'data'" in msg


def test_declared_stage_parameters_are_accepted(tmp_path):
    data = base_profile() | {"stages": {"samples": {"M": 4}, "data": None}}
    p = load(tmp_path, data)
    assert C.stage_params(p, "samples") == {"M": 4}
    assert C.stage_params(p, "data") == {}
    assert C.stage_params(p, "graphs") == {}


@pytest.mark.parametrize("stages, message", [
    ({"graphs": {"k": "abc"}}, "stages.graphs.k: expected an integer, got 'abc' (a string)"),
    ({"samples": {"M": "8"}}, "stages.samples.M: expected an integer, got '8' (a string); write it without quotes: M: 8"),
    ({"samples": {"M": 0}}, "stages.samples.M: must be >= 1, got 0"),
    ({"samples": {"temperature": 5}}, "stages.samples.temperature: must be <= 2"),
    ({"samples": {"temperature": 5.0}}, "stages.samples.temperature: must be <= 2"),
    ({"samples": {"temperature": 0}}, "stages.samples.temperature: must be > 0"),
    ({"samples": {"backend": "tgi"}}, "stages.samples.backend: 'tgi' is not one of"),
    ({"trajectories": {"threshold": True}}, "stages.trajectories.threshold: expected a number, got True"),
    ({"data": {"benchmarks": "aime24"}}, "stages.data.benchmarks: expected a list, got 'aime24'"),
    ({"graphs": {"sparsify_k": "10"}}, "stages.graphs.sparsify_k: expected an integer or null, got '10'"),
    ({"graphs": ["k", 4]}, "stages.graphs: must be a mapping of parameter: value"),
])
def test_stage_parameters_are_typed_and_ranged(tmp_path, stages, message):
    """Types and ranges come from the stage's Params; the message names the full path (issue 20)."""
    with pytest.raises(C.ConfigError) as ei:
        load(tmp_path, base_profile() | {"stages": stages})
    assert message in str(ei.value) and "profile 'p'" in str(ei.value)


def test_stages_must_be_a_mapping(tmp_path):
    with pytest.raises(C.ConfigError, match="'stages' must be a mapping"):
        load(tmp_path, base_profile() | {"stages": ["graphs"]})


def test_typed_values_are_normalised(tmp_path):
    p = load(tmp_path, base_profile() | {"stages": {"trajectories": {"threshold": 55}}})
    assert R.effective_params(p, "trajectories").threshold == 55.0
    assert isinstance(R.effective_params(p, "trajectories").threshold, float)


# -------------------------------------------------------------------------------------- extends

def test_extends_chain_merges_dicts_and_replaces_lists(tmp_path):
    grand = base_profile() | {"seed": 1, "stages": {
        "graphs": {"k": 8, "spread_seeds": [0, 1, 2]},
        "data": {"eval_sets": {"nav-a": {"n": 3, "levels": [3, 4]}}, "n_places": 12}}}
    gpath = write(tmp_path, "grand", grand)
    parent = {"extends": gpath, "seed": 2,
              "families": {"fam": {"label": "parent label"}},
              "stages": {"graphs": {"spread_seeds": [5]}}}
    ppath = write(tmp_path, "parent", parent)
    child = {"extends": ppath, "description": "child",
             "stages": {"data": {"eval_sets": {"nav-a": {"levels": [2]}}}}}
    cpath = write(tmp_path, "child", child)

    p = C.load_profile(cpath)
    assert p["chain"] == [cpath, ppath, gpath]
    assert p["name"] == "child" and p["description"] == "child"
    assert "extends" not in p
    assert p["seed"] == 2                                          # nearest wins
    fam = p["families"]["fam"]
    assert fam["label"] == "parent label"                          # dict merged ...
    assert fam["variants"] == ORGANISM_FAMILY["variants"]          # ... keeping the rest
    assert p["stages"]["graphs"] == {"k": 8, "spread_seeds": [5]}  # list replaced, not appended
    assert p["stages"]["data"] == {"eval_sets": {"nav-a": {"n": 3, "levels": [2]}}, "n_places": 12}


def test_extends_committed_profile_by_name(tmp_path):
    p = load(tmp_path, {"extends": "ci", "seed": 7, "stages": {"samples": {"M": 2}}}, name="mine")
    ci = R.load_profile("ci")
    assert p["chain"][1:] == ["ci", "organism"]
    assert p["seed"] == 7
    assert p["families"] == ci["families"]
    assert p["stages"]["samples"] == {**ci["stages"]["samples"], "M": 2}
    assert p["stages"]["train"] == ci["stages"]["train"]


def test_extends_relative_path_is_relative_to_the_profile(tmp_path, monkeypatch):
    sub = tmp_path / "profiles"
    sub.mkdir()
    write(sub, "base", base_profile() | {"seed": 3})
    child = write(sub, "child", {"extends": "base.yaml"})
    monkeypatch.chdir(REPO / "notebooks")  # the notebooks run with this cwd; the runner with another
    assert C.load_profile(child)["seed"] == 3
    monkeypatch.chdir(tmp_path)
    assert C.load_profile(child)["seed"] == 3


def test_extends_unknown_parent(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown profile 'nope'"):
        load(tmp_path, {"extends": "nope", "seed": 1})


def test_extends_loop_is_detected(tmp_path):
    a, b = str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    write(tmp_path, "a", base_profile() | {"extends": b})
    write(tmp_path, "b", {"extends": a, "seed": 1})
    with pytest.raises(C.ConfigError) as ei:
        C.load_profile(a)
    msg = str(ei.value)
    assert "loops" in msg and "a.yaml" in msg and "b.yaml" in msg


def test_extends_self_loop_is_detected(tmp_path):
    a = str(tmp_path / "a.yaml")
    write(tmp_path, "a", base_profile() | {"extends": a})
    with pytest.raises(C.ConfigError, match="loops"):
        C.load_profile(a)


def test_extends_three_cycle_is_detected(tmp_path):
    paths = [str(tmp_path / f"{n}.yaml") for n in "abc"]
    for i, n in enumerate("abc"):
        write(tmp_path, n, base_profile() | {"extends": paths[(i + 1) % 3]})
    with pytest.raises(C.ConfigError, match=re.escape("loops")):
        C.load_profile(paths[0])


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"x": [1], "y": 2}}
    over = {"a": {"x": [3]}}
    out = C.deep_merge(base, over)
    assert out == {"a": {"x": [3], "y": 2}}
    assert base == {"a": {"x": [1], "y": 2}} and over == {"a": {"x": [3]}}
    out["a"]["x"].append(9)
    assert over["a"]["x"] == [3]
