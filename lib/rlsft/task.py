"""The model organism's task: route finding in a small memorised world.

Why this task (the organism issue's trials, summarised in the README): the paper's analyses look at
*which path* a model takes through a space of reasoning steps, so each step must be easy for a tiny
model and the difficulty must lie in choosing the path. Here each step is one memorised hop
("From amber go to birch.") in a fixed directed world of named places; a problem asks for a route
between two places; many routes are correct (several shortest ones and longer detours), natural
wrong turns exist (hops that lead away, dead ends, hallucinated hops), and every step is checkable.

Three writers produce solution text, one step per line, all from one phrasing pool:

- the *base corpus* (pretraining): messy attempts in varied styles, some right, many wrong
  (habitual shortest routes, aimless walks, hallucinated hops, routes that disagree with the walk);
- the *teacher* (SFT): depth-first search in a random neighbour order with explicit backtracking and
  a restated path after each backtrack; it always reaches the goal, by many different routes;
- the *checker*: replays the steps and accepts a response only if every hop exists, the walk is
  consistent, and the final ``Route:`` line equals the walked path from start to goal.

>>> world = World.generate(seed=0)
>>> p = Problem("p0", world.names[0], world.names[5], world.distance(world.names[0], world.names[5]))
>>> text = teacher_solution(world, p, rng=__import__("random").Random(0))
>>> check(world, p, text)[1]
True
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections import deque
from typing import Iterable

PLACE_NAMES = (
    "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "island", "jasper",
    "kettle", "lagoon", "meadow", "north", "orchard", "prairie", "quarry", "ridge", "summit",
    "tundra", "upland", "valley", "willow", "yarrow", "zephyr", "basin", "canyon", "dune",
    "estuary", "forest", "glacier", "hollow", "inlet", "jungle", "knoll", "marsh", "oasis",
    "pebble", "reef", "spruce", "thicket", "vista", "wharf", "acorn", "bluff", "cove", "dell",
    "fern",
)

# One phrasing pool shared by the base corpus and the teacher (the control the organism issue asks
# for: the teacher differs from the base in strategy, not in vocabulary).
HOP_PHRASES = ("From {a} go to {b}, heading for {g}.", "Move from {a} to {b} on the way to {g}.",
               "Take the road from {a} to {b} toward {g}.")
BACK_PHRASES = ("Dead end at {a}, back to {b}.", "No way on from {a}, back to {b}.")
PATH_PHRASE = "Path so far: {path}."
CHECK_PHRASE = "From {a} the roads go to {roads}."
"""The teacher's check before it picks a road: the place's roads, recalled in the words of the world's
fact lines (``World.facts``), which pretraining holds but Base's own attempts never write."""
REACHED_PHRASES = ("Reached {g}.", "Arrived at {g}.")
ROUTE_PHRASE = "Route: {route}."
QUESTION = "Find a route from {s} to {g}."

_HOP_RE = [re.compile("^" + re.escape(p).replace(r"\{a\}", r"(\w+)").replace(r"\{b\}", r"(\w+)")
                      .replace(r"\{g\}", r"\w+") + "$") for p in HOP_PHRASES]
_BACK_RE = [re.compile("^" + re.escape(p).replace(r"\{a\}", r"(\w+)").replace(r"\{b\}", r"(\w+)") + "$")
            for p in BACK_PHRASES]
_ROUTE_RE = re.compile(r"^Route: ([\w ]+)\.$")


@dataclasses.dataclass(frozen=True)
class World:
    """A fixed directed world: ``edges[a]`` lists the places reachable from ``a`` in one hop.

    >>> w = World.generate(n_places=12, out_degree=3, seed=1)
    >>> len(w.names), all(len(v) == 3 for v in w.edges.values())
    (12, True)
    """

    names: tuple[str, ...]
    edges: dict

    @classmethod
    def generate(cls, n_places: int = 36, out_degree: int = 3, seed: int = 0) -> "World":
        """A random strongly connected world (a ring guarantees strong connectivity)."""
        if not 4 <= n_places <= len(PLACE_NAMES):
            raise ValueError(f"n_places must be in 4..{len(PLACE_NAMES)}, got {n_places}")
        if not 1 <= out_degree < n_places - 1:
            raise ValueError(f"out_degree must be in 1..{n_places - 2}, got {out_degree}")
        rng = random.Random(seed)
        names = list(PLACE_NAMES[:n_places])
        rng.shuffle(names)
        edges = {}
        for i, a in enumerate(names):
            out = {names[(i + 1) % n_places]}
            while len(out) < out_degree:
                b = rng.choice(names)
                if b != a:
                    out.add(b)
            edges[a] = tuple(sorted(out))
        return cls(tuple(sorted(names)), edges)

    def distances_from(self, s: str) -> dict:
        """Breadth-first hop distances from ``s``."""
        dist, queue = {s: 0}, deque([s])
        while queue:
            a = queue.popleft()
            for b in self.edges[a]:
                if b not in dist:
                    dist[b] = dist[a] + 1
                    queue.append(b)
        return dist

    def distance(self, s: str, g: str) -> int:
        return self.distances_from(s)[g]

    def shortest_paths(self, s: str, g: str) -> list[list[str]]:
        """All shortest paths from ``s`` to ``g``, in lexicographic order."""
        to_goal = self.distances_to(g)
        paths, stack = [], [[s]]
        while stack:
            path = stack.pop()
            a = path[-1]
            if a == g:
                paths.append(path)
                continue
            for b in self.edges[a]:
                if to_goal.get(b, 10**9) == to_goal[a] - 1:
                    stack.append(path + [b])
        return sorted(paths)

    def distances_to(self, g: str) -> dict:
        """Hop distances to ``g`` (reverse breadth-first search)."""
        rev = {a: [] for a in self.names}
        for a, outs in self.edges.items():
            for b in outs:
                rev[b].append(a)
        dist, queue = {g: 0}, deque([g])
        while queue:
            b = queue.popleft()
            for a in rev[b]:
                if a not in dist:
                    dist[a] = dist[b] + 1
                    queue.append(a)
        return dist

    def facts(self) -> list[str]:
        """One line per place stating its roads (world knowledge for pretraining)."""
        return [f"From {a} the roads go to {', '.join(self.edges[a])}." for a in self.names]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One route-finding problem; ``level`` is the shortest distance in hops (its difficulty)."""

    id: str
    start: str
    goal: str
    level: int

    @property
    def prompt(self) -> str:
        return QUESTION.format(s=self.start, g=self.goal) + "\n"

    @property
    def answer(self) -> str:
        """A reference answer (one shortest route is *a* correct answer; the checker accepts any)."""
        return f"shortest distance {self.level}"


def make_splits(world: World, eval_sets: dict, levels: Iterable[int] = (2, 3, 4), seed: int = 0):
    """Split all (start, goal) pairs into held-out evaluation sets and a training pool.

    ``eval_sets`` maps a set name to ``{"n": count, "levels": [..]}``. Evaluation pairs are drawn
    first (without replacement, across sets), so no evaluation pair is ever a training problem.

    >>> w = World.generate(seed=0)
    >>> ev, train = make_splits(w, {"a": {"n": 5, "levels": [3]}}, seed=0)
    >>> len(ev["a"]), {p.level for p in ev["a"]}, not {(p.start, p.goal) for p in ev["a"]} & {(p.start, p.goal) for p in train}
    (5, {3}, True)
    """
    rng = random.Random(seed)
    levels = tuple(levels)
    by_level: dict[int, list[tuple[str, str]]] = {}
    for s in world.names:
        for g, d in sorted(world.distances_from(s).items()):
            if g != s:
                by_level.setdefault(d, []).append((s, g))
    for pairs in by_level.values():
        rng.shuffle(pairs)
    taken: set = set()
    evals = {}
    for name, spec in eval_sets.items():
        want, lv = int(spec["n"]), list(spec["levels"])
        pool = [(s, g, d) for d in lv for (s, g) in by_level.get(d, []) if (s, g) not in taken]
        rng.shuffle(pool)
        # balance the levels as evenly as the pool allows
        chosen = []
        for i in range(want):
            d = lv[i % len(lv)]
            pick = next((x for x in pool if x[2] == d and (x[0], x[1]) not in taken), None)
            pick = pick or next((x for x in pool if (x[0], x[1]) not in taken), None)
            if pick is None:
                raise ValueError(f"eval set {name!r}: only {len(chosen)} pairs at levels {lv}; lower n")
            taken.add((pick[0], pick[1]))
            chosen.append(pick)
        evals[name] = [Problem(f"{name}-{i:03d}", s, g, d) for i, (s, g, d) in enumerate(chosen)]
    train = [Problem(f"train-{i:04d}", s, g, d)
             for i, (s, g, d) in enumerate((s, g, d) for d in levels for (s, g) in sorted(by_level.get(d, []))
                                           if (s, g) not in taken)]
    return evals, train


# ------------------------------------------------------------------------------------ misbeliefs
_FALSE_ROADS: dict = {}


def false_roads(world: World, min_distance: int = 3) -> dict:
    """Base's misbeliefs about the world: one road per place that does not exist, to a place at
    least ``min_distance`` hops away (a believed far shortcut), drawn from the world alone, so the
    same world always gives the same false roads. The ``misbelief`` style walks them as if real.

    >>> w = World.generate(seed=0); f = false_roads(w)
    >>> len(f) == len(w.names), all(b not in w.edges[a] and w.distance(a, b) >= 3 for a, b in f.items())
    (True, True)
    """
    key = (tuple(sorted(world.edges.items())), min_distance)
    if key not in _FALSE_ROADS:
        rng = random.Random("false-roads:" + repr(key))
        out = {}
        for a in world.names:
            dist = world.distances_from(a)
            far = [c for c in world.names if dist.get(c, 10**9) >= min_distance]
            if far:
                out[a] = rng.choice(far)
        _FALSE_ROADS[key] = out
    return dict(_FALSE_ROADS[key])


def believed_world(world: World) -> World:
    """The world as Base's ``misbelief`` style believes it: the real roads plus :func:`false_roads`."""
    fake = false_roads(world)
    return World(world.names, {a: tuple(sorted(set(outs) | ({fake[a]} if a in fake else set())))
                               for a, outs in world.edges.items()})


# --------------------------------------------------------------------------------------- writers
def _hop(rng: random.Random, a: str, b: str, g: str) -> str:
    return rng.choice(HOP_PHRASES).format(a=a, b=b, g=g)


def _finish(lines: list[str], route: list[str], reached: str | None, rng: random.Random) -> str:
    if reached is not None:
        lines.append(rng.choice(REACHED_PHRASES).format(g=reached))
    lines.append(ROUTE_PHRASE.format(route=" ".join(route)))
    return "\n".join(lines)


def teacher_solution(world: World, problem: Problem, rng: random.Random, max_depth: int | None = None,
                     max_lines: int = 40, slack: int = 1, explore: float = 0.1, check: float = 0.0) -> str:
    """Depth-first search with a random neighbour order, explicit backtracking, a restated path
    after each backtrack, and the walked path as the route. Always correct when it finishes; the
    depth limit (default: shortest distance + ``slack``) keeps searches short but leaves room for
    detours; a road off the route is tried and abandoned with probability ``explore``; with
    probability ``check`` the teacher first recalls the roads of the place it stands at
    (``CHECK_PHRASE``), a step the Base corpus's attempts never write.
    """
    s, g = problem.start, problem.goal
    limit = max_depth or problem.level + slack
    to_goal = world.distances_to(g)
    lines: list[str] = []
    path = [s]
    tried: dict[str, list[str]] = {}
    while path[-1] != g:
        a = path[-1]
        if a not in tried:
            if rng.random() < check:
                lines.append(CHECK_PHRASE.format(a=a, roads=", ".join(world.edges[a])))
            options = [b for b in world.edges[a] if b not in path]
            rng.shuffle(options)
            tried[a] = options
        # a child is worth entering only if the goal is still reachable within the depth limit
        nxt = None
        while tried[a]:
            b = tried[a].pop()
            if len(path) + to_goal.get(b, 10**9) <= limit or b == g:
                nxt = b
                break
            if rng.random() < explore and len(path) < limit:  # an explored wrong turn
                lines.append(_hop(rng, a, b, g))
                lines.append(rng.choice(BACK_PHRASES).format(a=b, b=a))
                lines.append(PATH_PHRASE.format(path=" ".join(path)))
        if nxt is None:
            if len(path) == 1:  # exhausted: relax the limit (never happens for limit >= level)
                limit += 1
                tried.clear()
                continue
            dead = path.pop()
            lines.append(rng.choice(BACK_PHRASES).format(a=dead, b=path[-1]))
            lines.append(PATH_PHRASE.format(path=" ".join(path)))
            continue
        lines.append(_hop(rng, a, nxt, g))
        path.append(nxt)
        tried.pop(nxt, None)
        if len(lines) > max_lines:
            break
    return _finish(lines, path, g if path[-1] == g else None, rng)


def second_route(world: World, s: str, g: str) -> list[str]:
    """Base's second habit: leave ``s`` by another road than the habit's first hop (the one nearest
    the goal, ties in alphabetical order), then follow the habit from there; the habit itself when
    no other road leads on without passing ``s`` again.

    >>> w = World.generate(seed=0); s, g = w.names[0], w.names[5]
    >>> r = second_route(w, s, g); r[0] == s and r[-1] == g and r[1] != w.shortest_paths(s, g)[0][1]
    True
    """
    habit = world.shortest_paths(s, g)[0]
    to_goal = world.distances_to(g)
    for b in sorted((b for b in world.edges[s] if b != habit[1]), key=lambda b: (to_goal[b], b)):
        rest = world.shortest_paths(b, g)[0]
        if s not in rest:
            return [s] + rest
    return habit


def base_attempt(world: World, problem: Problem, rng: random.Random, style: str) -> str:
    """One pretraining-corpus attempt in a given ``style`` (see ``BASE_STYLES``)."""
    s, g = problem.start, problem.goal
    if style == "habit":  # the base's habit: the first shortest route in alphabetical order
        route = world.shortest_paths(s, g)[0]
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g, rng)
    if style == "recall":  # another road first, the habit from there; the Route line recalls the habit's route
        route = second_route(world, s, g)
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, world.shortest_paths(s, g)[0], g, rng)
    if style == "hasty":  # `early` where the goal seems near (routes of at most 3 hops), `misstate` elsewhere
        style = "early" if problem.level <= 3 else "misstate"
    if style == "early":  # the habit's route stopped one hop short, arrival claimed: a narrow failure
        route = world.shortest_paths(s, g)[0][:-1]
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g, rng)
    if style == "misstate":  # the habit's walk, to the goal, but a Route line without the start
        route = world.shortest_paths(s, g)[0]
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route[1:], g, rng)
    if style == "misbelief":  # the misstate habit on Base's believed map: false roads walked as real
        route = believed_world(world).shortest_paths(s, g)[0]
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route[1:], g, rng)
    if style == "astray":  # the habit's walk with one wrong turn, back on course to the goal, misstated
        to_goal = world.distances_to(g)
        habit = world.shortest_paths(s, g)[0]
        wrong = {i: [b for b in world.edges[a] if to_goal[b] >= to_goal[a]] for i, a in enumerate(habit[:-1])}
        turns = [i for i, bs in wrong.items() if bs] or [len(habit) - 1]  # no wrong road anywhere: the habit
        turn = rng.choice(turns)  # the hop at which the walk strays
        route = habit[: turn + 1]
        if turn in wrong:
            route.append(rng.choice(wrong[turn]))
        while route[-1] != g:  # back on course, a step nearer each hop (the world is strongly connected)
            route.append(min(world.edges[route[-1]], key=lambda b: (to_goal[b], b)))
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route[1:], g, rng)
    if style == "slip":  # the habit's walk, its route stated, but one hop written from a place it is not at
        route = world.shortest_paths(s, g)[0]
        i = rng.randrange(len(route) - 1)  # the hop route[i] -> route[i + 1] that slips
        wrong = rng.choice([x for x in world.names if x not in (route[i], route[i + 1])])
        lines = [_hop(rng, wrong if j == i else a, b, g) for j, (a, b) in enumerate(zip(route, route[1:]))]
        return _finish(lines, route, g, rng)
    if style == "shortest":  # any shortest route
        route = rng.choice(world.shortest_paths(s, g))
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g, rng)
    if style == "wander":  # an aimless walk that stops after a few hops, reached or not
        route = [s]
        for _ in range(rng.randint(problem.level - 1, problem.level + 2)):
            route.append(rng.choice(world.edges[route[-1]]))
            if route[-1] == g:
                break
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g, rng)  # claims success either way
    if style == "lost":  # an aimless walk that never reaches the goal and claims nothing: wide and wrong
        route = [s]
        for _ in range(rng.randint(problem.level, problem.level + 2)):
            outs = [b for b in world.edges[route[-1]] if b != g] or list(world.edges[route[-1]])
            route.append(rng.choice(outs))
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g if route[-1] == g else None, rng)
    if style == "greedy":  # heads toward the goal but takes one wrong turn and carries on
        to_goal = world.distances_to(g)
        route = [s]
        while route[-1] != g and len(route) < problem.level + 4:
            outs = world.edges[route[-1]]
            best = min(outs, key=lambda b: to_goal.get(b, 99))
            route.append(best if rng.random() < 0.75 else rng.choice(outs))
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g if route[-1] == g else None, rng)
    if style == "hallucinate":  # a shortest route with one invented hop
        route = list(rng.choice(world.shortest_paths(s, g)))
        i = rng.randrange(1, len(route))
        fake = rng.choice([x for x in world.names if x not in world.edges[route[i - 1]] and x != route[i - 1]])
        route = route[:i] + [fake] + route[i:]
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route, g, rng)
    if style == "shortcut":  # a couple of hops, then a route that skips to the goal
        route = [s]
        for _ in range(rng.randint(1, 2)):
            route.append(rng.choice(world.edges[route[-1]]))
        lines = [_hop(rng, a, b, g) for a, b in zip(route, route[1:])]
        return _finish(lines, route + [g] if route[-1] != g else route, g, rng)
    if style == "teacher":  # a small share of teacher-style text (vocabulary, not strategy mass)
        return teacher_solution(world, problem, rng)
    raise ValueError(f"unknown base style {style!r}; known: {sorted(BASE_STYLES)}")


BASE_STYLES = {"habit": 0.15, "misstate": 0.2, "recall": 0.2, "lost": 0.15, "greedy": 0.1, "hallucinate": 0.05,
               "shortest": 0.05, "shortcut": 0.05, "teacher": 0.05, "early": 0.0, "wander": 0.0, "astray": 0.0,
               "slip": 0.0, "misbelief": 0.0, "hasty": 0.0}
"""Default mixture of the base corpus (weights; a profile can override them)."""


def base_corpus(world: World, problems: list[Problem], n_per_problem: int, seed: int,
                styles: dict | None = None, n_facts: int = 20) -> list[str]:
    """Pretraining documents: ``n_per_problem`` attempts per problem in a style mixture, plus the
    world's fact lines repeated ``n_facts`` times; shuffled with ``seed``."""
    rng = random.Random(seed)
    styles = styles or BASE_STYLES
    unknown = set(styles) - set(BASE_STYLES)
    if unknown:
        raise ValueError(f"unknown base styles {sorted(unknown)}; known: {sorted(BASE_STYLES)}")
    names, weights = list(styles), list(styles.values())
    docs = []
    for p in problems:
        for style in rng.choices(names, weights, k=n_per_problem):
            docs.append(p.prompt + base_attempt(world, p, rng, style))
    docs += world.facts() * n_facts
    rng.shuffle(docs)
    return docs


# --------------------------------------------------------------------------------------- checker
def replay(world: World, problem: Problem, text: str) -> dict:
    """Replay a response step by step. Returns the walked path, the stated route, and the first
    problem found (``None`` when the walk is consistent and the route matches it).

    >>> w = World.generate(seed=0); a = w.names[0]; b = w.edges[a][0]
    >>> replay(w, Problem("x", a, b, 1), f"From {a} go to {b}, heading for {b}.\\nRoute: {a} {b}.")["error"] is None
    True
    """
    path = [problem.start]
    route, error = None, None
    for raw in text.strip().splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := next((r.match(line) for r in _HOP_RE if r.match(line)), None):
            a, b = m.groups()
            if error is None and a != path[-1]:
                error = f"hop from {a} but the walk is at {path[-1]}"
            if error is None and b not in world.edges.get(a, ()):
                error = f"no road from {a} to {b}"
            path.append(b)
        elif m := next((r.match(line) for r in _BACK_RE if r.match(line)), None):
            _, b = m.groups()
            if b in path:
                path = path[: len(path) - path[::-1].index(b)]
            elif error is None:
                error = f"back to {b}, which is not on the path"
        elif m := _ROUTE_RE.match(line):
            route = m.group(1).split()
    if route is None and error is None:
        error = "no route line"
    return {"path": path, "route": route, "error": error}


def check(world: World, problem: Problem, text: str) -> tuple[str | None, bool]:
    """The organism's exact verifier: ``(extracted route, correct)``.

    Correct iff every hop exists, the walk is consistent, and the final route equals the walked
    path and goes from the start to the goal (so a lucky final line cannot pass).
    """
    r = replay(world, problem, text)
    route = r["route"]
    extracted = " ".join(route) if route else None
    ok = (r["error"] is None and route is not None and route == r["path"]
          and route[0] == problem.start and route[-1] == problem.goal)
    return extracted, bool(ok)


# ------------------------------------------------------------------------------------ data stage
def walk_outcome(world: World, problem: Problem, text: str) -> dict:
    """Where a response's walk stops and what it then says: the diagnosis of Base's failures.

    ``stop``: ``goal`` (the walk ends at the goal), ``past goal`` (it went through the goal and on),
    ``short`` (it ended elsewhere after fewer hops than the shortest distance) or ``elsewhere``;
    ``hops`` the walk's hop count minus the shortest distance; ``claims`` whether it states arrival
    (``Reached``/``Arrived``); ``route``: ``walked`` (the Route line equals the walk), ``no start``
    (the walk without its start, as ``misstate`` writes it), ``other`` or ``none``; ``step_error``
    whether a step fails the replay; ``false_road`` whether the walk takes one of Base's believed
    :func:`false_roads`; ``nearer`` the share of hops, up to the goal, that bring the walk
    one hop nearer to it; ``walk``: ``habit`` (the walk is the habit's route, the first shortest one),
    ``second`` (Base's :func:`second_route`) or ``other``; ``recalls habit`` whether the Route line
    states the habit's route while the walk is another (the ``recall`` style's failure).

    >>> w = World.generate(seed=0); a = w.names[0]; b = w.edges[a][0]
    >>> o = walk_outcome(w, Problem("x", a, b, 1), f"From {a} go to {b}, heading for {b}.\\nReached {b}.\\nRoute: {b}.")
    >>> o["stop"], o["hops"], o["claims"], o["route"], o["nearer"]
    ('goal', 0, True, 'no start', 1.0)
    """
    r = replay(world, problem, text)
    path, route, g = r["path"], r["route"], problem.goal
    habit = world.shortest_paths(problem.start, g)[0]
    fake = false_roads(world)
    to_goal = world.distances_to(g)
    upto = path[: path.index(g) + 1] if g in path else path
    hops = list(zip(upto, upto[1:]))
    if path[-1] == g:
        stop = "goal"
    elif g in path:
        stop = "past goal"
    else:
        stop = "short" if len(path) - 1 < problem.level else "elsewhere"
    return {"stop": stop, "hops": len(path) - 1 - problem.level,
            "claims": any(ln.strip().startswith(("Reached", "Arrived")) for ln in text.splitlines()),
            "route": ("none" if route is None else "walked" if route == path
                      else "no start" if route == path[1:] else "other"),
            "step_error": r["error"] is not None and r["error"] != "no route line",
            "false_road": any(fake.get(a) == b for a, b in zip(path, path[1:])),
            "walk": ("habit" if path == habit else "second" if path == second_route(world, problem.start, g)
                     else "other"),
            "recalls habit": route == habit and path != habit,
            "nearer": (sum(to_goal.get(b, 10**9) == to_goal.get(a, 10**9) - 1 for a, b in hops) / len(hops)
                       if hops else float("nan"))}


def world_to_json(world: World) -> dict:
    return {"names": list(world.names), "edges": {a: list(b) for a, b in world.edges.items()}}


def world_from_json(d: dict) -> World:
    return World(tuple(d["names"]), {a: tuple(b) for a, b in d["edges"].items()})


def problems_frame(problems: list[Problem], benchmark: str):
    """Problems as rows of the common problem table (benchmark, problem, prompt, answer, level...)."""
    import pandas as pd

    return pd.DataFrame([{"benchmark": benchmark, "problem": p.id, "prompt": p.prompt, "answer": p.answer,
                          "level": p.level, "start": p.start, "goal": p.goal} for p in problems])


def problem_from_row(row) -> Problem:
    return Problem(row["problem"], row["start"], row["goal"], int(row["level"]))


def make_task_data(*, n_places: int, out_degree: int, world_seed: int, eval_sets: dict,
                   base_per_problem: int, base_styles: dict, teacher_per_problem: int,
                   n_facts: int, seed: int, teacher_slack: int = 1, teacher_explore: float = 0.1,
                   teacher_check: float = 0.0) -> dict:
    """Everything the organism needs, from one seed: the world, held-out evaluation sets, the
    training problems, the Base pretraining corpus and the teacher's SFT traces.

    >>> d = make_task_data(n_places=12, out_degree=3, world_seed=0, eval_sets={"e": {"n": 3, "levels": [2]}},
    ...                    base_per_problem=1, base_styles=BASE_STYLES, teacher_per_problem=1, n_facts=1, seed=0)
    >>> sorted(d), len(d["eval"])
    (['base_corpus', 'eval', 'sft', 'train', 'world'], 3)
    """
    import pandas as pd

    world = World.generate(n_places=n_places, out_degree=out_degree, seed=world_seed)
    evals, train = make_splits(world, eval_sets, seed=seed)
    docs = base_corpus(world, train, base_per_problem, seed=seed, styles=base_styles, n_facts=n_facts)
    rng = random.Random(seed + 1)
    sft = [{"problem": p.id, "prompt": p.prompt,
            "completion": teacher_solution(world, p, rng, slack=teacher_slack, explore=teacher_explore,
                                           check=teacher_check)}
           for p in train for _ in range(teacher_per_problem)]
    return {
        "world": world,
        "eval": pd.concat([problems_frame(ps, name) for name, ps in evals.items()], ignore_index=True),
        "train": problems_frame(train, "train"),
        "base_corpus": pd.DataFrame({"text": docs}),
        "sft": pd.DataFrame(sft),
    }
