"""How warmfast meets a fresh machine: the repository's kernels/ folder never shadows an installed
package, the CPU path works where Triton is not installed, and every import is declared."""
import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _py(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fake_site(tmp_path):
    """A site folder holding a package named `kernels` (as PyPI's kernel hub installs one)."""
    pkg = tmp_path / "site" / "kernels"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("MARK = 'installed kernels'\nCUDAProperties = object\n")
    (pkg / "sub" / "__init__.py").write_text("WHERE = 'installed kernels.sub'\n")
    return tmp_path / "site"


def test_python_c_from_the_repo_root_gets_the_installed_kernels(fake_site):
    # `python -c` puts '' (the working folder, here the repo root with its kernels/) first on sys.path
    code = ("import kernels, kernels.sub, warmfast.kernels.lora as l; "
            "print(kernels.MARK, '|', kernels.sub.WHERE, '|', l.__name__)")
    r = _py("-c", code, cwd=REPO, env_extra={"PYTHONPATH": str(fake_site)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "installed kernels | installed kernels.sub | warmfast.kernels.lora"


def test_python_m_pytest_from_the_repo_root_gets_the_installed_kernels(fake_site, tmp_path):
    probe = tmp_path / "probe" / "test_probe.py"
    probe.parent.mkdir()
    probe.write_text(textwrap.dedent("""
        def test_probe():
            import sys, kernels
            from kernels import CUDAProperties  # what transformers 5.25 imports
            assert kernels.MARK == "installed kernels", kernels.__file__
            assert "" in sys.path or %r in sys.path, sys.path  # python -m put the repo root on the path
    """ % str(REPO)))
    r = _py("-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(probe.parent), str(probe),
            cwd=REPO, env_extra={"PYTHONPATH": str(fake_site)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout


def test_without_an_installed_kernels_the_name_holds_nothing():
    # -S: no site-packages, so no installed `kernels`; the repo root is still first on sys.path
    code = ("import kernels\n"
            "print(kernels.__file__, getattr(kernels, '__version__', None), kernels.__path__)\n"
            "try:\n    import kernels.lora\nexcept ModuleNotFoundError as e:\n    print('missing:', e.name)\n")
    r = _py("-S", "-c", code, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["None None []", "missing: kernels.lora"]


def test_transformers_imports_from_the_repo_root_without_an_installed_kernels(tmp_path):
    # transformers >= 5 finds kernels/ on sys.path and imports it for a version when no `kernels`
    # distribution is installed (an H200 image with transformers 5.17): it must read as absent
    shown = tmp_path / "site"  # every site-packages entry but the kernel hub's
    shown.mkdir()
    for site_dir in [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]:
        for entry in site_dir.iterdir():
            hub = entry.name == "kernels" or re.match(r"kernels-[^-]+\.dist-info$", entry.name)
            if not hub and not (shown / entry.name).exists():
                (shown / entry.name).symlink_to(entry)
    code = textwrap.dedent(f"""
        import importlib.util, site, sys
        site.addsitedir({str(shown)!r})
        assert sys.path[0] == '', sys.path[:2]  # the repo root, holding kernels/, comes first
        import transformers.activations, transformers.modeling_utils
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
        from transformers.utils import is_kernels_available
        print('ok', is_kernels_available())
    """)
    r = _py("-S", "-c", code, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "ok False"


def test_transformers_imports_from_the_repo_root():
    r = _py("-c", "import transformers.modeling_utils, peft; import warmfast; print('ok')", cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_cpu_path_without_triton(tiny):
    paths = tiny("llama", n_adapters=2)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["triton"] = None  # `import triton` raises ImportError, as where no wheel exists
        import warmfast as wf
        eng = wf.Engine.from_pretrained({str(paths.model_dir)!r},
                                        adapters={ {k: str(v) for k, v in paths.adapters.items()}!r},
                                        backend="auto")
        res = eng.score([wf.ScoreRequest(context="the cat", continuation=" sat", adapter=a)
                         for a in (None, *eng.adapter_names)])
        print(len(res), all(r.logprob < 0 for r in res))
        try:
            wf.Engine.from_pretrained({str(paths.model_dir)!r}, backend="triton")
        except ValueError as e:
            print("triton:", e)
    """)
    r = _py("-c", code, cwd=REPO.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "3 True"
    assert lines[1].startswith("triton: backend='triton'") and "needs the triton package" in lines[1]


# import name -> distribution name, where they differ
_DIST = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "flash_attn": "flash-attn",
         "lm_eval": "lm-eval", "inspect_ai": "inspect-ai", "google": "protobuf"}


def _third_party_imports(root: Path) -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    local = {"warmfast", "kernels"}
    found = set()
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in stdlib and top not in local:
                    found.add(top)
    return found


def _declared(meta: dict) -> set[str]:
    reqs = list(meta["project"]["dependencies"])
    for extra in meta["project"].get("optional-dependencies", {}).values():
        reqs += extra
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_every_import_of_the_package_is_declared():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = _declared(meta)
    used = _third_party_imports(REPO / "src") | _third_party_imports(REPO / "kernels")
    missing = sorted(u for u in used if _DIST.get(u, u).lower().replace("_", "-") not in declared)
    assert not missing, f"imported by warmfast but not declared in pyproject.toml: {missing}"


# extras that CI cannot install or never exercises: flash-attn builds only against CUDA; detoxify
# fetches its classifier from the hub at run time
UNPINNED_EXTRAS = ("flash-attn", "detoxify")


def test_constraints_pin_every_declared_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[name.lower().replace("_", "-")] = version
    unpinned = sorted(d for d in _declared(meta) if d not in pins and d not in (*UNPINNED_EXTRAS, "warmfast"))
    assert not unpinned, f"declared in pyproject.toml but not pinned in constraints.txt: {unpinned}"
