"""warmfast._C is imported lazily: without it `import warmfast`, the engine API and the Triton
kernels still import, and the CPU path's first use of it says what is missing and how to build it."""
import subprocess
import sys

# a meta-path finder that hides warmfast._C, as if the extension had never been built
HIDE_C = (
    "import sys\n"
    "class Hide:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'warmfast._C':\n"
    "            raise ImportError('No module named warmfast._C')\n"
    "sys.meta_path.insert(0, Hide())\n"
)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_C + code], capture_output=True, text=True, timeout=300)


def test_import_warmfast_without_extension():
    r = run("import warmfast\n"
            "from warmfast import Engine, ScoreRequest, GenerateRequest\n"
            "import warmfast.engine.backend, warmfast.engine.generator, warmfast.engine.scorer\n"
            "import warmfast.kernels.sampling, warmfast.kernels.lora\n"
            "print('imported', 'warmfast._C' in sys.modules)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "imported False"


def test_cpu_sampler_without_extension_names_the_build():
    r = run("import torch\n"
            "from warmfast.engine.sampling import SamplingParams, sample_probs\n"
            "sample_probs(torch.ones(1, 8), [SamplingParams(temperature=1.0)], [0], [0], 'cpp')\n")
    assert r.returncode != 0
    assert "warmfast._C is missing" in r.stderr, r.stderr
    assert "pip install --no-build-isolation -e ." in r.stderr and "the CPU path needs it" in r.stderr


def test_extension_loads_when_built():
    from warmfast import native

    assert hasattr(native.C(), "sample")
