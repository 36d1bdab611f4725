"""The organism's task: world, splits, writers and the step-replaying checker; the task registry
(problem builders and verifiers per task), the problems table's schema and the data stage."""
import json
import random

import pandas as pd
import pytest

from rlsft import schema
from rlsft import task as T
from rlsft import tasks
from rlsft.context import Context
from rlsft.errors import ConfigError
from rlsft.params import build
from rlsft.stages import data, samples


@pytest.fixture(scope="module")
def world():
    return T.World.generate(n_places=20, out_degree=3, seed=3)


@pytest.fixture(scope="module")
def splits(world):
    return T.make_splits(world, {"a": {"n": 10, "levels": [3]}, "b": {"n": 10, "levels": [2, 3]}}, seed=0)


def test_world_is_strongly_connected_and_seeded(world):
    assert all(len(world.distances_from(s)) == len(world.names) for s in world.names)
    assert T.World.generate(n_places=20, out_degree=3, seed=3) == world
    assert T.World.generate(n_places=20, out_degree=3, seed=4) != world


@pytest.mark.parametrize("bad", [dict(n_places=2), dict(n_places=999), dict(out_degree=0)])
def test_world_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        T.World.generate(**bad)


def test_eval_sets_are_held_out_and_levelled(splits):
    evals, train = splits
    train_pairs = {(p.start, p.goal) for p in train}
    seen = set()
    for name, probs in evals.items():
        for p in probs:
            assert (p.start, p.goal) not in train_pairs
            assert (p.start, p.goal) not in seen
            seen.add((p.start, p.goal))
    assert {p.level for p in evals["a"]} == {3}
    assert {p.level for p in evals["b"]} == {2, 3}


def test_every_teacher_trace_verifies(world, splits):
    _, train = splits
    rng = random.Random(0)
    for p in train:
        text = T.teacher_solution(world, p, rng)
        extracted, ok = T.check(world, p, text)
        assert ok, text
        assert extracted.split()[0] == p.start and extracted.split()[-1] == p.goal


def test_teacher_explores_many_routes_base_habit_one(world, splits):
    _, train = splits
    p = max(train, key=lambda q: q.level)
    routes = {T.check(world, p, T.teacher_solution(world, p, random.Random(i)))[0] for i in range(32)}
    habits = {T.check(world, p, T.base_attempt(world, p, random.Random(i), "habit"))[0] for i in range(32)}
    assert len(habits) == 1 and len(routes) > 1


@pytest.mark.parametrize("style", ["habit", "shortest"])
def test_correct_base_styles_verify(world, splits, style):
    _, train = splits
    rng = random.Random(1)
    assert all(T.check(world, p, T.base_attempt(world, p, rng, style))[1] for p in train)


def test_early_stops_on_the_habit_route_and_fails(world, splits):
    _, train = splits
    rng = random.Random(3)
    for p in [q for q in train if q.level >= 2][:40]:
        early = T.base_attempt(world, p, rng, "early")
        habit = T.base_attempt(world, p, random.Random(0), "habit")
        route, ok = T.check(world, p, early)
        assert not ok and route is not None
        # the roads it walks are the habit's own, one fewer
        habit_route = T.check(world, p, habit)[0]
        assert habit_route.startswith(route) and len(route.split()) == len(habit_route.split()) - 1


def test_misstate_walks_the_habit_to_the_goal_and_fails_on_the_route_line(world, splits):
    _, train = splits
    rng = random.Random(4)
    for p in train[:40]:
        text = T.base_attempt(world, p, rng, "misstate")
        habit = T.base_attempt(world, p, random.Random(0), "habit")
        walked = T.replay(world, p, text)
        assert walked["error"] is None and walked["path"] == T.replay(world, p, habit)["path"]
        assert walked["path"][-1] == p.goal
        route, ok = T.check(world, p, text)
        assert not ok and route.split() == walked["path"][1:]  # the start left out


def test_astray_strays_once_from_the_habit_walks_back_to_the_goal_and_misstates(world, splits):
    _, train = splits
    rng = random.Random(6)
    extra = set()
    for p in train[:60]:
        text = T.base_attempt(world, p, rng, "astray")
        walked = T.replay(world, p, text)
        path = walked["path"]
        habit = T.replay(world, p, T.base_attempt(world, p, random.Random(0), "habit"))["path"]
        assert walked["error"] is None and path[-1] == p.goal and p.goal not in path[:-1]
        i = next(i for i, (a, b) in enumerate(zip(path, habit)) if a != b)  # the wrong turn
        to_goal = world.distances_to(p.goal)
        assert to_goal[path[i]] >= to_goal[path[i - 1]]
        assert all(to_goal[b] == to_goal[a] - 1 for a, b in zip(path[i:], path[i + 1:]))  # then straight back
        route, ok = T.check(world, p, text)
        assert not ok and route.split() == path[1:]  # the start left out, as misstate
        extra.add(len(path) - 1 - p.level)
    assert min(extra) >= 1 and len(extra) >= 3  # the stop is at the goal, not after the hop count


def test_slip_writes_one_hop_from_a_place_the_walk_is_not_at_and_is_wrong_for_that_alone(world, splits):
    _, train = splits
    rng = random.Random(8)
    for p in train[:40]:
        text = T.base_attempt(world, p, rng, "slip")
        habit = T.replay(world, p, T.base_attempt(world, p, random.Random(0), "habit"))["path"]
        walked = T.replay(world, p, text)
        assert walked["path"] == habit and walked["route"] == habit  # the habit's walk, stated as walked
        assert walked["error"].startswith("hop from ")  # the one slip
        assert T.check(world, p, text) == (" ".join(habit), False)
        o = T.walk_outcome(world, p, text)
        assert (o["stop"], o["route"], o["step_error"]) == ("goal", "walked", True)


def test_false_roads_are_one_per_place_far_unreal_and_fixed_by_the_world(world):
    fake = T.false_roads(world)
    assert sorted(fake) == sorted(world.names)
    assert all(b not in world.edges[a] and world.distance(a, b) >= 3 for a, b in fake.items())
    assert T.false_roads(T.World.generate(n_places=20, out_degree=3, seed=3)) == fake  # the world alone fixes them
    assert T.false_roads(T.World.generate(n_places=20, out_degree=3, seed=4)) != fake
    believed = T.believed_world(world)
    assert all(set(believed.edges[a]) == set(world.edges[a]) | {fake[a]} for a in world.names)


def test_misbelief_walks_the_believed_habit_and_fails_for_its_false_roads(world, splits):
    _, train = splits
    rng = random.Random(9)
    fake, believed, took = T.false_roads(world), T.believed_world(world), 0
    for p in train:
        text = T.base_attempt(world, p, rng, "misbelief")
        path = T.replay(world, p, text)["path"]
        assert path == believed.shortest_paths(p.start, p.goal)[0]  # Base's habit on its believed map
        uses = any(fake.get(a) == b for a, b in zip(path, path[1:]))
        o = T.walk_outcome(world, p, text)
        assert (o["stop"], o["route"], o["false_road"], o["step_error"]) == ("goal", "no start", uses, uses)
        assert not T.check(world, p, text)[1]  # misstated, as misstate, and wrong again on a false road
        took += uses
    assert 0 < took < len(train)  # some routes take a false road, not all
    assert not any(T.walk_outcome(world, p, T.base_attempt(world, p, rng, "habit"))["false_road"] for p in train)


@pytest.mark.parametrize("style, stop, route, claims", [
    ("habit", "goal", "walked", True), ("misstate", "goal", "no start", True), ("astray", "goal", "no start", True),
])
def test_walk_outcome_reads_where_a_writer_stops(world, splits, style, stop, route, claims):
    _, train = splits
    rng = random.Random(7)
    for p in train[:30]:
        o = T.walk_outcome(world, p, T.base_attempt(world, p, rng, style))
        assert (o["stop"], o["route"], o["claims"], o["step_error"]) == (stop, route, claims, False)
        assert (o["hops"] == 0) == (style != "astray") and (o["nearer"] == 1.0) == (style != "astray")


def test_walk_outcome_tells_past_short_and_elsewhere(world, splits):
    _, train = splits
    p = next(q for q in train if q.level >= 3)
    habit = world.shortest_paths(p.start, p.goal)[0]
    hop = T.HOP_PHRASES[0]
    lines = [hop.format(a=a, b=b, g=p.goal) for a, b in zip(habit, habit[1:])]
    on = next(b for b in world.edges[p.goal])
    past = lines + [hop.format(a=p.goal, b=on, g=p.goal), f"Reached {p.goal}.", f"Route: {' '.join(habit + [on])}."]
    short = lines[:1] + [f"Reached {p.goal}.", f"Route: {' '.join(habit)}."]
    o_past, o_short = T.walk_outcome(world, p, "\n".join(past)), T.walk_outcome(world, p, "\n".join(short))
    assert (o_past["stop"], o_past["hops"], o_past["claims"], o_past["route"]) == ("past goal", 1, True, "walked")
    assert (o_short["stop"], o_short["hops"], o_short["route"]) == ("short", 1 - p.level, "other")
    lost = T.walk_outcome(world, p, T.base_attempt(world, p, random.Random(1), "lost"))
    assert lost["stop"] == "elsewhere" and not lost["claims"]
    bad = T.walk_outcome(world, p, f"From {p.start} go to {p.start}, heading for {p.goal}.")
    assert bad["step_error"] and bad["route"] == "none"


def test_lost_walks_real_roads_away_from_the_goal_and_fails(world, splits):
    _, train = splits
    rng = random.Random(5)
    for p in train[:60]:
        text = T.base_attempt(world, p, rng, "lost")
        walked = T.replay(world, p, text)
        assert walked["error"] is None and p.level <= len(walked["path"]) - 1 <= p.level + 2
        assert "Reached" not in text and "Arrived" not in text
        assert walked["path"][-1] != p.goal and not T.check(world, p, text)[1]


def test_hallucinated_roads_fail(world, splits):
    _, train = splits
    rng = random.Random(2)
    assert not any(T.check(world, p, T.base_attempt(world, p, rng, "hallucinate"))[1] for p in train)


def test_checker_rejects_wrong_answers(world, splits):
    _, train = splits
    p = train[0]
    good = T.base_attempt(world, p, random.Random(0), "habit")
    assert T.check(world, p, good)[1]
    lines = good.splitlines()
    route = lines[-1]
    # a final route that skips the walked steps
    assert not T.check(world, p, "\n".join(lines[:-1] + [f"Route: {p.start} {p.goal}."]))[1]
    # a walk that stops short of the goal
    assert not T.check(world, p, "\n".join(lines[:1] + [route]))[1]
    # no route line at all
    assert T.check(world, p, "\n".join(lines[:-1])) == (None, False)
    # an invented road
    a = p.start
    fake = next(x for x in world.names if x not in world.edges[a] and x != a)
    bad = f"From {a} go to {fake}, heading for {p.goal}.\nRoute: {a} {fake}."
    assert T.replay(world, p, bad)["error"].startswith("no road")
    # empty and garbage text
    assert T.check(world, p, "") == (None, False)
    assert T.check(world, p, "Route: banana.")[1] is False


def test_backtracking_is_replayed(world, splits):
    _, train = splits
    p = next(q for q in train if q.level >= 2)
    a, g = p.start, p.goal
    wrong = next(b for b in world.edges[a])
    right_route = world.shortest_paths(a, g)[0]
    lines = [f"From {a} go to {wrong}, heading for {g}.", f"Dead end at {wrong}, back to {a}.", f"Path so far: {a}."]
    lines += [f"From {x} go to {y}, heading for {g}." for x, y in zip(right_route, right_route[1:])]
    lines += [f"Reached {g}.", f"Route: {' '.join(right_route)}."]
    assert T.check(world, p, "\n".join(lines))[1]


def test_task_data_is_seeded():
    kw = dict(n_places=12, out_degree=3, world_seed=0, eval_sets={"e": {"n": 3, "levels": [2]}},
              base_per_problem=2, base_styles=T.BASE_STYLES, teacher_per_problem=1, n_facts=1)
    a, b = T.make_task_data(seed=0, **kw), T.make_task_data(seed=0, **kw)
    assert a["base_corpus"].equals(b["base_corpus"]) and a["sft"].equals(b["sft"]) and a["eval"].equals(b["eval"])
    c = T.make_task_data(seed=1, **kw)
    assert not a["sft"].equals(c["sft"])


def test_world_json_round_trip(world):
    assert T.world_from_json(T.world_to_json(world)) == world


# ------------------------------------------------------------------ task registry, problems schema

def test_task_registry_names_the_known_tasks():
    assert set(tasks.TASKS) == {"navigation", "benchmarks", "completions"}
    for name, t in tasks.TASKS.items():
        assert t.name == name and callable(t.build) and callable(t.verifier) and t.doc
    with pytest.raises(ConfigError, match=r"unknown task 'chess'; known tasks: \['benchmarks', 'completions', "
                                          r"'navigation'\]"):
        tasks.get("chess")
    with pytest.raises(ConfigError, match="known tasks"):
        tasks.make_verifier("math", ".")


@pytest.mark.parametrize("stage", [data, samples])
def test_stages_accept_only_registered_tasks(stage):
    assert build(stage.Params, {"task": "completions"}, "s").task == "completions"
    with pytest.raises(ConfigError, match=r"s.task: 'chess' is not one of"):
        build(stage.Params, {"task": "chess"}, "s")


def test_meta_round_trip():
    rec = {"id": "HumanEval/0", "problem": "def f(x):\n", "answer": "    return x\n", "prompt": "def f(x):\n",
           "entry_point": "f", "test": "def check(c): assert c(1) == 1\n", "tags": ["a", "b"], "n": 3}
    row = schema.problem_row("humaneval", rec)
    assert tuple(row) == schema.BENCHMARK_PROBLEM_COLUMNS
    assert list(schema.read_meta(row)) == ["prompt", "entry_point", "test", "tags", "n"]  # record order kept
    assert schema.verifier_problem(row) == rec
    math = schema.problem_row("aime24", {"id": 3, "problem": "Q", "answer": 27})
    assert (math["problem"], math["answer"], math["meta"]) == ("3", "27", "{}")
    assert schema.verifier_problem(math) == {"id": "3", "problem": "Q", "answer": "27"}
    assert schema.read_meta({"meta": ""}) == {} and schema.read_meta({"prompt": "Q"}) == {}


def test_benchmark_verifiers_judge_the_record_rebuilt_from_meta(tmp_path):
    row = schema.problem_row("aime24", {"id": "aime24-01", "problem": "Q", "answer": "3", "source": "x"})
    bench = tasks.make_verifier("benchmarks", tmp_path)
    assert bench(r"\boxed{3}", row) == ("3", True, "ok") and bench("3", row)[2] == "no_box"
    comp = tasks.make_verifier("completions", tmp_path)
    amc = {**row, "benchmark": "amc"}  # not a registered benchmark: math, as for imported answers
    assert comp(r"\boxed{3}", amc) == ("3", True, "ok") and comp.identity(amc).startswith("completions:math:")
    assert comp.identity(row) != bench.identity(row)  # another task's verifier: another shard key


def test_data_stage_writes_what_the_task_builds(tmp_path):
    params = data.Params(n_places=12, eval_sets={"e": {"n": 3, "levels": [2]}}, base_per_problem=1,
                         teacher_per_problem=1, n_facts=1)
    ctx = Context(name="data", profile={"seed": 0}, params=params, root=tmp_path)
    ctx.dir.mkdir(parents=True)
    tables = data.run(ctx, params)
    direct = T.make_task_data(n_places=12, out_degree=3, world_seed=0, eval_sets={"e": {"n": 3, "levels": [2]}},
                              base_per_problem=1, base_styles=params.base_styles, teacher_per_problem=1,
                              n_facts=1, seed=0, teacher_slack=1, teacher_explore=0.1)
    assert sorted(p.name for p in ctx.dir.iterdir()) == ["base_corpus.parquet", "problems.parquet", "sft.parquet",
                                                        "train_problems.parquet", "world.json"]
    for name, key in (("problems", "eval"), ("train_problems", "train"), ("base_corpus", "base_corpus"),
                      ("sft", "sft")):
        pd.testing.assert_frame_equal(pd.read_parquet(ctx.dir / f"{name}.parquet"), direct[key])
    assert T.world_from_json(json.loads((ctx.dir / "world.json").read_text())) == direct["world"]
    assert tables["counts"]["problems"].to_dict() == {"e": 3}
    with pytest.raises(ConfigError, match="no problems were loaded"):
        data.run(ctx, data.Params(task="benchmarks"))


def test_hasty_stops_early_on_short_routes_and_misstates_long_ones(world, splits):
    _, train = splits
    rng = random.Random(11)
    levels = set()
    for p in train:
        o = T.walk_outcome(world, p, T.base_attempt(world, p, rng, "hasty"))
        expected = ("short", True) if p.level <= 3 else ("goal", True)
        assert (o["stop"], o["claims"]) == expected and (p.level <= 3 or o["route"] == "no start")
        levels.add(p.level)
    assert {2, 4} <= levels  # both branches were exercised


def test_recall_walks_the_second_habit_and_states_the_first(world, splits):
    _, train = splits
    rng = random.Random(12)
    differs = 0
    for p in train:
        text = T.base_attempt(world, p, rng, "recall")
        r = T.replay(world, p, text)
        walk, habit = r["path"], world.shortest_paths(p.start, p.goal)[0]
        assert walk == T.second_route(world, p.start, p.goal) and walk[-1] == p.goal
        assert r["route"] == habit
        assert T.check(world, p, text)[1] == (walk == habit)
        differs += walk != habit
    assert differs > 0.9 * len(train)  # nearly every problem has a second road
