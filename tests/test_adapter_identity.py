"""An adapter's identity in result keys is its tensors' content and its canonical config: saving
the same adapter again (PEFT writes target_modules from a set, tensors in any order, other
metadata, another base path) keeps every result; changing what it computes does not."""
import json
import shutil

import yaml
from safetensors.torch import load_file, save_file

from warmfast.run.config import load_config
from warmfast.run.plan import adapter_fingerprint
from warmfast.run.runner import run


def resave(src, dst, **conf_changes):
    """The same adapter written again: tensors in reverse order with other metadata, config keys
    and target_modules reordered, another base_model_name_or_path."""
    dst.mkdir()
    tensors = load_file(src / "adapter_model.safetensors")
    save_file(dict(reversed(list(tensors.items()))), dst / "adapter_model.safetensors",
              metadata={"format": "pt", "saved_by": "another run"})
    conf = json.loads((src / "adapter_config.json").read_text())
    conf["target_modules"] = list(reversed(conf["target_modules"]))
    conf["base_model_name_or_path"] = "/somewhere/else"
    conf.update(conf_changes)
    (dst / "adapter_config.json").write_text(json.dumps(dict(reversed(list(conf.items())))))
    return dst


def test_resaved_adapter_keeps_its_fingerprint_and_changes_do_not(tiny, tmp_path):
    a = tiny("llama", 1).adapters["adapter_0"]
    assert adapter_fingerprint(resave(a, tmp_path / "same"), "x") == adapter_fingerprint(a, "x")
    assert adapter_fingerprint(resave(a, tmp_path / "alpha", lora_alpha=3), "x") != adapter_fingerprint(a, "x")
    other = resave(a, tmp_path / "weights")
    t = load_file(other / "adapter_model.safetensors")
    key = next(iter(sorted(t)))
    t[key] = t[key] + 1e-3
    save_file(t, other / "adapter_model.safetensors")
    assert adapter_fingerprint(other, "x") != adapter_fingerprint(a, "x")
    dropout = resave(a, tmp_path / "dropout", lora_dropout=0.3)  # training-only: no effect on outputs
    assert adapter_fingerprint(dropout, "x") == adapter_fingerprint(a, "x")


def test_resaved_adapter_resumes_with_no_job_recomputed(tiny, tmp_path):
    p = tiny("llama", 1)
    moved = resave(p.adapters["adapter_0"], tmp_path / "resaved")

    def config(adapter):
        raw = {"name": "ident", "output_dir": str(tmp_path / "run"), "model": {"name": "tiny", "path": str(p.model_dir)},
               "arms": {"original": {"kind": "original"}, "warm": {"kind": "adapter", "adapter": str(adapter)}},
               "tasks": {"gsm8k": {"n": 2}, "advbench": {"n": 1}}, "capability_generation": {"max_new_tokens": 3},
               "export": ["csv"]}
        path = tmp_path / f"{adapter.name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)

    first = run(config(p.adapters["adapter_0"]), progress=False)
    assert first.generated_now == first.jobs == 6
    again = run(config(moved), progress=False)
    assert again.jobs == 6 and again.generated_now == 0 and sum(again.judged_now.values()) == 0
    shutil.rmtree(moved)
    changed = resave(p.adapters["adapter_0"], tmp_path / "resaved", lora_alpha=99)
    third = run(config(changed), progress=False)
    assert third.generated_now == 3  # the adapter arm's jobs are new work; the base arm's are kept
