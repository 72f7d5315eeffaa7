"""House rule 1: imports go one way; pipeline/ never imports ray or jobs."""

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def test_pipeline_imports_neither_ray_nor_jobs():
    offenders = []
    for py in PIPELINE.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{py.name}: {n}" for n in names if n.split(".")[0] in ("ray", "jobs")]
    assert not offenders


ROOT = PIPELINE.parent


def _imports(py: Path) -> set[str]:
    """Every module ``py`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(py.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_library_tests_do_not_import_jobs():
    offenders = [str(py.relative_to(ROOT)) for py in (ROOT / "tests").rglob("*.py")
                 if "jobs" not in py.relative_to(ROOT / "tests").parts
                 and any(m.split(".")[0] == "jobs" for m in _imports(py))]
    assert not offenders, f"tests of pipeline/ that import jobs/: {offenders}"


def test_no_import_cycles():
    """The module graph of pipeline/ and jobs/ (function-level imports included) is acyclic."""
    modules = {}
    for pkg in ("pipeline", "jobs"):
        for py in (ROOT / pkg).rglob("*.py"):
            name = ".".join(py.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = py
    graph = {m: set() for m in modules}
    for m, py in modules.items():
        for imp in _imports(py):
            # `from a.b import c` names a.b (or a.b.c when c is a module); a package's
            # __init__ re-exporting its own modules is not a cycle through the package
            for target in (imp, imp.rsplit(".", 1)[0]):
                if target in modules and target != m and not m.startswith(target + "."):
                    graph[m].add(target)
                    break
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle.extend(path[path.index(n):] + [m, n] if n in path else [m, n])
                return True
            if n not in state and visit(n, [*path, m]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_runtime_codec_imports_no_training_model_or_source_code():
    """`pipeline.codec` holds what encoding and decoding need: it imports no codec training,
    models, sources, images or tasks, so a decode-only user loads no classifier."""
    offenders = sorted(f"{py.relative_to(ROOT)}: {m}" for py in (PIPELINE / "codec").rglob("*.py")
                       for m in _imports(py)
                       if m.startswith(("pipeline.codec_train", "pipeline.models", "pipeline.sources",
                                        "pipeline.images", "pipeline.train", "pipeline.tasks.photos",
                                        "pipeline.tasks", "pipeline.tasks.scenes", "pipeline.loader")))
    assert not offenders, offenders


def test_a_decode_only_import_is_light():
    """Loading a codec and decoding ŷ pulls in no model, source or training module."""
    import subprocess
    import sys

    code = ("import sys, pipeline.codec.load, pipeline.codec.codec\n"
            "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('pipeline'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.split()
    floors = ("codec_train", "models", "sources", "images", "train", "photos", "tasks", "scenes", "loader",
              "eval")
    heavy = [m for m in out if m.split(".")[1:2] and m.split(".")[1] in floors]
    assert "pipeline.codec.codec" in out and not heavy, heavy


def test_storage_is_the_bottom_floor():
    """`pipeline.storage` imports nothing of the project's; the runtime codec and the sources
    reach storage through it, not through the shard package above them."""
    assert not [m for m in _imports(PIPELINE / "storage.py") if m.startswith("pipeline")]
    for pkg in ("codec", "sources"):
        offenders = sorted(f"{py.relative_to(ROOT)}: {m}" for py in (PIPELINE / pkg).rglob("*.py")
                           for m in _imports(py) if m.startswith(("pipeline.shards", "pipeline.convert")))
        assert not offenders, offenders


#: The floors of pipeline/: a package or top-level module imports only what stands on a lower
#: floor (README, *Layout*). Storage and the naming rules at the bottom, the runtime codec on
#: them, the readers and the shard format next, evaluation at the top.
FLOORS = {
    "errors": 0, "names": 0, "storage": 0,
    "codec": 1,
    "sources": 2, "models": 2, "shards": 2,
    "images": 3,
    "tasks": 4, "convert": 4, "loader": 4,
    "train": 5,
    "codec_train": 6, "eval": 6,
}


def _package_imports() -> dict[str, set[str]]:
    """Top-level part of pipeline/ → the other parts it imports (function-level imports too)."""
    graph: dict[str, set[str]] = {}
    for py in PIPELINE.rglob("*.py"):
        parts = py.relative_to(PIPELINE).with_suffix("").parts
        if parts == ("__init__",):
            continue
        here = parts[0]
        graph.setdefault(here, set())
        graph[here] |= {m.split(".")[1] for m in _imports(py)
                        if m.startswith("pipeline.") and m.split(".")[1] != here}
    return graph


def test_every_part_of_the_library_has_a_floor_and_imports_only_downwards():
    graph = _package_imports()
    assert set(graph) == set(FLOORS), f"parts without a floor: {set(graph) ^ set(FLOORS)}"
    upward = sorted(f"{a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]})"
                    for a, deps in graph.items() for b in deps if FLOORS[b] >= FLOORS[a])
    assert not upward, upward


def test_every_package_says_what_it_is_for_and_may_import():
    """Each package's __init__ opens with the map a newcomer reads first."""
    missing = [str(p.relative_to(ROOT)) for p in PIPELINE.rglob("__init__.py")
               if len((ast.get_docstring(ast.parse(p.read_text())) or "").splitlines()) < 2]
    assert not missing, missing
