"""The workflow page's layout: layers from the dependencies, a layer's order from its dependencies'
heights, one edge per dependency, and the switch to a list past a few hundred steps."""

from __future__ import annotations

from skiplock.queue.models import JobState
from skiplock.queue.workflows import WorkflowStep
from skiplock.ui.dag import MAX_DRAWN_STEPS, Node, layout


def steps(*spec: tuple[str, list[str]]) -> list[WorkflowStep]:
    return [
        WorkflowStep(name=name, job_id=n + 1, task="echo", state=JobState.WAITING, after=after)
        for n, (name, after) in enumerate(spec)
    ]


def names(found: list[list[Node]]) -> list[list[str]]:
    return [[n.step.name for n in layer] for layer in found]


def test_a_step_is_one_layer_past_its_deepest_dependency() -> None:
    dag = layout(steps(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["a", "c"]), ("e", [])))
    assert names(dag.layers) == [["a", "e"], ["b"], ["c"], ["d"]]
    assert [(e.source.step.name, e.target.step.name) for e in dag.edges] == [
        ("a", "b"),
        ("b", "c"),
        ("a", "d"),
        ("c", "d"),
    ]
    xs = {n.step.name: n.x for layer in dag.layers for n in layer}
    assert xs["a"] == xs["e"] < xs["b"] < xs["c"] < xs["d"]
    assert dag.drawn


def test_steps_given_after_their_dependents_are_laid_out_the_same() -> None:
    dag = layout(steps(("d", ["c"]), ("c", ["b"]), ("b", ["a"]), ("a", [])))
    assert names(dag.layers) == [["a"], ["b"], ["c"], ["d"]]


def test_a_layer_follows_its_dependencies_order_so_parallel_chains_do_not_cross() -> None:
    # Two chains whose second steps were listed the other way round: ordered by their
    # dependency's height, x2 sits beside x1 and y2 beside y1.
    dag = layout(steps(("x1", []), ("y1", []), ("y2", ["y1"]), ("x2", ["x1"])))
    assert names(dag.layers) == [["x1", "y1"], ["x2", "y2"]]
    for edge in dag.edges:
        assert edge.source.y == edge.target.y
        assert edge.path.startswith(f"M{edge.source.x + 150:g},")


def test_a_10000_step_chain_is_laid_out_and_listed_not_drawn() -> None:
    chain = steps(*((f"s{i}", [f"s{i - 1}"] if i else []) for i in range(10_000)))
    dag = layout(list(reversed(chain)))  # the worst order for the layer walk
    assert len(dag.layers) == 10_000
    assert len(dag.edges) == 9_999
    assert not dag.drawn
    small = layout(chain[:MAX_DRAWN_STEPS])
    assert small.drawn
    assert not layout(chain[: MAX_DRAWN_STEPS + 1]).drawn
