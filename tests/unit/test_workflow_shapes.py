"""chain, group and chord as steps with names and edges, and what a workflow is refused for
before anything is written."""

from __future__ import annotations

import pytest

from skiplock.errors import WorkflowInvalid
from skiplock.queue.workflows import Step, Workflow, chain, chord, group, order_steps
from tests.support import tasks as test_tasks


def edges(workflow: Workflow) -> dict[str, tuple[str, ...]]:
    return {s.name: s.after for s in workflow.steps}


def test_a_chord_of_a_group_with_a_chain_in_it_names_every_step_uniquely() -> None:
    flow = chord(
        group(Step("", "echo"), Step("", "echo"), chain(Step("", "echo"), Step("", "echo"))), Step("", "echo")
    )
    assert edges(flow) == {"0": (), "1": (), "2.0": (), "2.1": ("2.0",), "callback": ("0", "1", "2.1")}
    assert flow.leaves == ("callback",)


def test_two_chains_side_by_side_share_no_name() -> None:
    flow = group(chain(Step("", "echo"), Step("", "echo")), chain(Step("", "echo"), Step("", "echo")))
    assert edges(flow) == {"0.0": (), "0.1": ("0.0",), "1.0": (), "1.1": ("1.0",)}


def test_steps_are_ordered_dependencies_first_whatever_order_they_come_in() -> None:
    ordered = order_steps(
        [Step("c", "echo", after=("b",)), Step("b", "echo", after=("a",)), Step("a", "echo")]
    )
    assert [s.name for s in ordered] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        ([Step("a" * 100 + "\n", "echo")], "steps[0].name"),  # a trailing newline is no name
        ([Step("a" * 101, "echo")], "steps[0].name"),
        ([Step("a", "echo", after="prev")], "not one name"),  # type: ignore[arg-type]
        ([Step("a", "echo", after=("a",))], "cycle: a -> a"),
        ([Step("a", "echo", after=("b", "b")), Step("b", "echo")], "named twice in after"),
    ],
)
def test_a_bad_workflow_is_refused_naming_the_problem(steps: list[Step], says: str) -> None:
    with pytest.raises(WorkflowInvalid, match=None) as raised:
        order_steps(steps)
    assert says in str(raised.value)


def test_a_tasks_step_takes_one_name_or_several_after() -> None:
    assert test_tasks.noop.step(after="prev").after == ("prev",)
    assert test_tasks.noop.step(after=["a", "b"]).after == ("a", "b")
