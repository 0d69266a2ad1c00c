"""The lm-eval backend on a real checkpoint: SmolLM2-135M-Instruct (tests/real_model.py) with a
random rank-4 rsLoRA adapter, against lm-eval's `hf` backend (`peft=`), fp32, the offline tasks of
tests/lm_eval_tasks.py (multiple choice, loglikelihood_rolling, generate_until): the same checks as
tests/test_lm_eval_backend.py on the tiny model. Marked `real`; needs the lm-eval extra."""
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("lm_eval")

import warmfast.integrations.lm_eval_backend  # noqa: E402,F401  (registers the "warmfast" model)
from lm_eval_tasks import write_tasks  # noqa: E402
from real_model import real_paths_or_skip  # noqa: E402
from test_lm_eval_backend import assert_same, evaluate, from_run  # noqa: E402

pytestmark = pytest.mark.real
MAX_LEN = 64
ARM = "qv_r4_rslora"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    paths = real_paths_or_skip()
    tasks = write_tasks(tmp_path_factory.mktemp("lm_eval_real_tasks"), n_mc=4, n_text=2, n_gen=3)
    return paths, tasks


@pytest.mark.parametrize("arm", ["base", ARM])
def test_smollm2_matches_hf_backend(real, arm):
    paths, tasks = real
    hf_args = dict(pretrained=str(paths.model_dir), max_length=MAX_LEN, dtype="float32")
    wf_args = dict(pretrained=str(paths.model_dir), max_length=MAX_LEN, dtype="float32",
                   adapters="|".join(f"{n}:{d}" for n, d in paths.adapters.items()), arm=arm)
    if arm != "base":
        hf_args["peft"] = str(paths.adapters[arm])
    assert_same(from_run(evaluate("hf", hf_args, tasks)), from_run(evaluate("warmfast", wf_args, tasks)))
