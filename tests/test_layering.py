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
