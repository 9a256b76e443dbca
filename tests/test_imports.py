"""Imports: no cycles among narro's modules, and the light commands never load an inference runtime."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("narro", "flows", "tasks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _node(module: str) -> str:
    """A subpackage of narro counts as one node (narro.engines.fallback is part of narro.engines):
    a package that imports a module importing the package back is a cycle, whichever submodule does it."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "narro" and len(parts) > 2 else module


def _imported(module: str, path: Path) -> set[str]:
    """The project modules `module` imports, at its top or inside functions; not those only for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for branch in ast.walk(tree)
                   if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
                   for statement in branch.body for node in ast.walk(statement)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}".strip(".")
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `narro.engines.edge.EdgeKind` is narro.engines.edge
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(_node(module), set())
        edges.update(_node(target) for target in _imported(module, path) if _node(target) != _node(module))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first walk, each as the path that closes it."""
    cycles, done, path = [], set(), []

    def visit(node: str) -> None:
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return cycles


def test_the_walk_sees_the_imports_it_must():
    graph = _graph()
    assert {"narro.engines", "narro.manifest", "narro.post"} <= graph["narro.plan"]
    assert "narro.engines" in graph["narro.voices"]  # imported inside load_registry: counted too
    assert "narro.plan" in graph["tasks.edge_limit"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles_among_narro_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_cli_and_engine_table_load_no_inference_runtime():
    probe = (
        "import sys\n"
        "import narro.cli, narro.engines\n"
        "kinds = dict(narro.engines.ENGINES)\n"
        "assert {'piper', 'edge'} <= set(kinds), kinds\n"
        "print(sorted(m for m in ('onnxruntime', 'torch', 'piper', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


NOOP_COURSE = """
course: noop-imports
title: Imports of a no-op
narrations:
  - id: one
    title: One
    text: The first clip of a course that is already published.
  - id: two
    title: Two
    text: The second clip, also published.
"""
NOOP_VOICES = "default: narrator\nvoices:\n  narrator:\n    fast: {engine: piper, model: joe-us-medium}\n"
# What a render that finds nothing to do must not load: the audio stack, the flow engine, engine runtimes.
HEAVY = ("scipy", "pyloudnorm", "prefect", "onnxruntime", "torch", "transformers", "piper", "faster_whisper",
         "ctranslate2", "edge_tts", "aiohttp", "dask", "distributed", "narro.audio", "narro.render", "narro.encode",
         "narro.watermark", "narro.qa", "narro.asr", "narro.clip")


def test_a_render_that_finds_nothing_to_do_loads_no_audio_stack(tmp_path: Path):
    from narro.manifest import load_course
    from narro.plan import plan
    from narro.store import LocalStore
    from tests.conftest import write_manifest
    from tests.stand_ins import publish_stand_ins

    manifest = write_manifest(tmp_path / "course", NOOP_COURSE, NOOP_VOICES)
    publish_stand_ins(LocalStore(tmp_path / "store"), plan(load_course(manifest)))
    probe = (
        "import json, sys\n"
        "from narro.cli import main\n"
        f"args = ['render', {str(manifest)!r}, '--store', {str(tmp_path / 'store')!r},"
        f" '--catalogue', {'sqlite:///' + str(tmp_path / 'catalogue.db')!r}]\n"
        "try:\n"
        "    main(args)\n"
        "except SystemExit as end:\n"
        "    code = end.code\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))\n"
        "print('PROBE ' + json.dumps({'code': code, 'loaded': loaded}))\n"
    )
    env = {**os.environ, "NARRO_LOG_DIR": str(tmp_path / "logs")}
    for run in ("first", "second"):  # the first also records the clips in the new catalogue
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120,
                                env=env)
        assert result.returncode == 0, result.stderr
        [line] = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
        outcome = json.loads(line.removeprefix("PROBE "))
        assert outcome == {"code": 0, "loaded": []}, (run, result.stdout)
    sidecars = [json.loads(path.read_text()) for path in sorted((tmp_path / "store" / "noop-imports").glob("*.json"))]
    assert [s.get("stand_in") for s in sidecars if "clips" not in s] == [True, True]  # nothing was rendered
