"""A workflow's steps laid out for drawing: layers left to right, edges between them.

A step's layer is one more than the deepest of its dependencies (0 for a step without any). Within
a layer the steps are ordered by the mean height of their dependencies (one pass from the first
layer on), which keeps most edges from crossing without the cost of a real crossing minimisation.
Above :data:`MAX_DRAWN_STEPS` steps (or :data:`MAX_DRAWN_EDGES` edges) a drawing is no longer
readable: the page shows the steps grouped by layer instead, and the layers are still computed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from skiplock.queue.workflows import WorkflowStep

MAX_DRAWN_STEPS = 300
MAX_DRAWN_EDGES = 2_000

NODE_WIDTH = 150
NODE_HEIGHT = 30
COLUMN_PITCH = NODE_WIDTH + 70
ROW_PITCH = NODE_HEIGHT + 14
MARGIN = 10
LABEL_CHARS = 20


@dataclass(slots=True)
class Node:
    step: WorkflowStep
    layer: int
    x: float = 0.0
    y: float = 0.0

    @property
    def label(self) -> str:
        name = self.step.name
        return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class Edge:
    source: Node
    target: Node

    @property
    def path(self) -> str:
        """A curve from the source's right side to the target's left side."""
        x1, y1 = self.source.x + NODE_WIDTH, self.source.y + NODE_HEIGHT / 2
        x2, y2 = self.target.x, self.target.y + NODE_HEIGHT / 2
        middle = (x1 + x2) / 2
        return f"M{x1:g},{y1:g} C{middle:g},{y1:g} {middle:g},{y2:g} {x2:g},{y2:g}"


@dataclass(slots=True)
class Layout:
    layers: list[list[Node]]
    edges: list[Edge] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0

    @property
    def drawn(self) -> bool:
        """Whether the page draws it (else it lists the steps by layer)."""
        steps = sum(len(layer) for layer in self.layers)
        return steps <= MAX_DRAWN_STEPS and len(self.edges) <= MAX_DRAWN_EDGES


def _layers(steps: Sequence[WorkflowStep]) -> dict[str, int]:
    """Each step's layer, whatever the order of ``steps`` (iterative: a 10,000-step chain is deep)."""
    after = {s.name: list(s.after) for s in steps}
    layer: dict[str, int] = {}
    for start in after:
        stack = [start]
        while stack:
            name = stack[-1]
            if name in layer:
                stack.pop()
                continue
            missing = [dep for dep in after[name] if dep not in layer and dep in after]
            if missing:
                stack.extend(missing)
                continue
            layer[name] = 1 + max((layer[d] for d in after[name] if d in layer), default=-1)
            stack.pop()
    return layer


def layout(steps: Sequence[WorkflowStep]) -> Layout:
    """Layers, positions and edges for ``steps`` (a workflow's, so acyclic with known names)."""
    depth = _layers(steps)
    layers: list[list[Node]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    nodes: dict[str, Node] = {}
    for step in steps:
        node = Node(step, depth[step.name])
        nodes[step.name] = node
        layers[node.layer].append(node)
    tallest = max((len(layer) for layer in layers), default=0)

    def mean_height(node: Node) -> float:
        heights = [nodes[d].y for d in node.step.after if d in nodes]
        return sum(heights) / len(heights)

    for index, layer in enumerate(layers):
        if index:  # the first layer keeps the workflow's order
            layer.sort(key=mean_height)  # stable: steps with the same mean keep their order
        offset = (tallest - len(layer)) * ROW_PITCH / 2
        for row, node in enumerate(layer):
            node.x = MARGIN + index * COLUMN_PITCH
            node.y = MARGIN + offset + row * ROW_PITCH
    edges = [Edge(nodes[d], node) for node in nodes.values() for d in node.step.after if d in nodes]
    width = 2 * MARGIN + max(len(layers) - 1, 0) * COLUMN_PITCH + NODE_WIDTH
    height = 2 * MARGIN + max(tallest - 1, 0) * ROW_PITCH + NODE_HEIGHT
    return Layout(layers=layers, edges=edges, width=width, height=height)
