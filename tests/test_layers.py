"""The package's layers (docs/architecture.md): imports run downward only, with no cycles.

    kernels/, csrc/ < model < engine < tasks, judge < run, train, analysis < integrations < cli

The layer contract lives in pyproject.toml ([tool.importlinter]) and is checked by import-linter,
which sees function-local imports too. These tests run it on the package, show that it catches a
lower layer importing a higher one, and hold what it cannot see: the kernels/ folder (installed as
warmfast.kernels from outside src/), cycles inside a layer, and imports hidden in functions.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "warmfast"
# third-party packages a function may import lazily: optional extras, or heavy imports kept off
# the paths that never need them (`warmfast report` need not load transformers); never warmfast
LAZY_OK = {"lm_eval", "inspect_ai", "flash_attn", "detoxify", "matplotlib", "transformers", "peft", "gguf",
           "pandas", "scipy", "statsmodels"}
# pyproject's ignore_imports: `from warmfast import _C` (native.py) is the compiled extension, which
# grimp reads as the package itself
IGNORED = {"warmfast.native": {"warmfast"}}
# warmfast modules imported inside a function on purpose: (file, module) -> why
LAZY_WARMFAST = {
    ("__init__.py", "warmfast.engine"): "`import warmfast` stays light; warmfast.Engine loads the engine",
    ("native.py", "warmfast"): "the compiled extension warmfast._C: a failed build breaks only its callers",
    ("integrations/lm_eval_cli.py", "warmfast.integrations"): "the lm-eval backend needs the lm-eval extra",
    ("integrations/inspect_provider.py", "warmfast.integrations.inspect_api"):
        "inspect_ai imports every provider at start; the engine loads when a warmfast model is used",
    ("serve/cli.py", "warmfast.serve.server"): "fastapi and uvicorn load only when a server runs",
}


def lint(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under `src`, with the contracts of cwd/pyproject.toml."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_layer_contract_holds():
    done = lint(ROOT, ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_every_module_has_a_layer():
    """A module the contract does not list is not checked at all: each top-level module and
    package of warmfast must sit in one layer."""
    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    listed = {name.strip("() ").removeprefix("warmfast.")
              for layer in layers for name in layer.replace(":", "|").split("|")}
    present = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    present |= {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert not present - listed, f"warmfast modules in no layer of pyproject.toml: {sorted(present - listed)}"


@pytest.mark.parametrize("low, high", [("model/config.py", "warmfast.engine.batch"),
                                       ("engine/tokens.py", "warmfast.run.store"),
                                       ("tasks/item.py", "warmfast.cli")])
def test_layer_contract_catches_an_upward_import(tmp_path, low, high):
    """The same contract on a copy of the package where one lower module imports a higher one,
    inside a function (the kind of import that used to hide the cycles)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(SRC, tmp_path / "src" / "warmfast", ignore=shutil.ignore_patterns("*.so", "data", "__pycache__"))
    target = tmp_path / "src" / "warmfast" / low
    target.write_text(target.read_text() + f"\n\ndef _upward():\n    import {high}  # noqa\n")
    done = lint(tmp_path, tmp_path / "src")
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout and high in done.stdout, done.stdout


def test_no_import_cycles():
    """No strongly connected set of modules (function-local imports included): a cycle inside one
    layer, which the layer contract allows, is still a design error."""
    graph = grimp.build_graph("warmfast", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) - IGNORED.get(m, set())) for m in modules}
    # Tarjan's strongly connected components, iteratively
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function body of the file."""
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, ast.Import):
                out.extend((child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                out.append((child.lineno, "." * child.level + (child.module or "")))
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return out


def test_function_local_imports_only_for_heavy_optional_packages():
    bad = [f"{path.relative_to(ROOT)}:{line}: import {module}"
           for path in sorted([*SRC.rglob("*.py"), *(ROOT / "kernels").glob("*.py")])
           for line, module in _function_imports(path)
           if module.split(".")[0] not in LAZY_OK
           and (path.relative_to(SRC).as_posix() if path.is_relative_to(SRC) else "", module) not in LAZY_WARMFAST]
    assert not bad, ("imports inside functions (move them to the top of the file; only "
                     f"{sorted(LAZY_OK)} may be imported lazily):\n" + "\n".join(bad))


def test_kernels_import_nothing_of_warmfast():
    """kernels/ is the bottom layer; import-linter does not see it (it is installed from outside
    src/), so its imports are read here: the standard library, torch/triton/numpy, and itself."""
    bad = []
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "warmfast"]
    assert not bad, "kernels/ imports warmfast: " + ", ".join(bad)


def test_command_line_start_up_leaves_heavy_packages_unloaded():
    """Every `warmfast` command builds the whole parser, so the modules of every command load:
    the heavy packages imported lazily for that reason must stay unloaded until used."""
    heavy = ("matplotlib", "statsmodels", "scipy", "transformers", "peft", "lm_eval", "inspect_ai")
    code = ("import sys; import warmfast.cli as c; c.build_parser(); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"loaded at start-up: {done.stdout.strip()}"
