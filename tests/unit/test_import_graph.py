"""The import graph keeps its walls: no import cycle in src/, no private engine module used outside it.

The graph is read from the source by tools/import_graph.py (`make graph` prints it). Today's
violations are listed below, each one edge or one circle; a new one fails, and so does a listed
one that no longer occurs, so the lists only shrink: whoever removes a violation removes its line.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


graph = _load_tool()
EDGES = graph.project_edges(ROOT)
SRC_EDGES = [e for e in EDGES if e.source.startswith("skiplock")]

# Circles between modules over the imports that run (top-level and function-local; a
# TYPE_CHECKING import never runs), each written from its smallest module.
KNOWN_CYCLES: set[tuple[str, ...]] = set()

# Loops between folders (first level under skiplock; a top-level module is its own).
KNOWN_FOLDER_LOOPS: set[tuple[str, ...]] = set()

# Private engine modules (skiplock.queue._...) imported from outside skiplock/queue/, bench/ included.
KNOWN_PRIVATE_QUEUE_IMPORTS: set[tuple[str, str]] = set()


def _shown(circles: set[tuple[str, ...]]) -> str:
    # A new edge can close hundreds of circles; a few show where.
    return f"{len(circles)}, e.g. " + "; ".join(" -> ".join([*c, c[0]]) for c in sorted(circles, key=len)[:5])


def private_queue_imports() -> set[tuple[str, str]]:
    return {
        (e.source, e.target)
        for e in graph.private_crossings(EDGES)
        if e.target.startswith("skiplock.queue._") and not e.source.startswith("skiplock.queue.")
    }


def test_graph_is_read() -> None:
    # A reader that found nothing would pass every test below.
    assert ("skiplock.queue.engine", "skiplock.queue._producer") in {(e.source, e.target) for e in SRC_EDGES}
    assert any(e.source.startswith("bench.") and e.target.startswith("skiplock.") for e in EDGES)


def test_no_import_cycle_beyond_the_known_ones() -> None:
    new = set(graph.elementary_cycles(SRC_EDGES)) - KNOWN_CYCLES
    assert not new, f"new import cycle(s) in src/ (see `make graph`): {_shown(new)}"


def test_every_known_import_cycle_still_occurs() -> None:
    gone = KNOWN_CYCLES - set(graph.elementary_cycles(SRC_EDGES))
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {sorted(gone)}"


def test_no_loop_between_folders_beyond_the_known_ones() -> None:
    new = set(graph.elementary_cycles(graph.folder_edges(SRC_EDGES))) - KNOWN_FOLDER_LOOPS
    assert not new, f"new loop(s) between folders of src/skiplock (see `make graph`): {_shown(new)}"


def test_every_known_loop_between_folders_still_occurs() -> None:
    gone = KNOWN_FOLDER_LOOPS - set(graph.elementary_cycles(graph.folder_edges(SRC_EDGES)))
    assert not gone, f"no longer a loop, remove from KNOWN_FOLDER_LOOPS: {sorted(gone)}"


def test_only_the_entry_points_import_the_composition_root() -> None:
    # skiplock/app.py assembles the app from the API, the dashboard and the tasks: a part that
    # imported it back would depend on every other part.
    importers = {e.source for e in EDGES if e.target == "skiplock.app"}
    assert importers <= {"skiplock", "skiplock.cli"}, f"skiplock.app imported by {sorted(importers)}"


def test_the_api_does_not_import_the_dashboard() -> None:
    # The dashboard builds on the API's public pieces; the composition root mounts both.
    found = {
        (e.source, e.target)
        for e in SRC_EDGES
        if graph.folder_of(e.source) == "skiplock.api" and graph.folder_of(e.target) == "skiplock.ui"
    }
    assert not found, f"the API imports the dashboard: {sorted(found)}"


def test_the_dashboard_uses_only_the_apis_public_names() -> None:
    found = {
        (e.source, e.target)
        for e in SRC_EDGES
        if graph.folder_of(e.source) == "skiplock.ui" and e.target.startswith("skiplock.api.")
    }
    assert not found, f"the dashboard imports API modules, not skiplock.api: {sorted(found)}"


def test_no_private_queue_module_imported_from_outside_beyond_the_known_ones() -> None:
    new = private_queue_imports() - KNOWN_PRIVATE_QUEUE_IMPORTS
    assert not new, f"private skiplock.queue._... module(s) imported from outside the engine: {sorted(new)}"


def test_every_known_private_queue_import_still_occurs() -> None:
    gone = KNOWN_PRIVATE_QUEUE_IMPORTS - private_queue_imports()
    assert not gone, f"no longer imported, remove from KNOWN_PRIVATE_QUEUE_IMPORTS: {sorted(gone)}"
