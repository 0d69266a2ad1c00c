"""Issue 13's matrix: malformed inputs a user can give (rows, flags, model folders, adapters, run
configs, stores, output paths), each through the real CLI entry point `warmfast.cli.main`.

Each case must end in exit status 2 with exactly one line on stderr that names the problem (or
be accepted, where the input is valid), and must leave what was there before untouched (an
existing output file, a run's store). Any other exception escaping main() fails the case: that
is a traceback a user would have seen. `-q` keeps log lines and progress bars off stderr.
"""
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from warmfast.cli import main
from warmfast.run.store import Generation, JobRecord, Store

PREVIOUS = "previous results\n"


@pytest.fixture(scope="module")
def t(tmp_path_factory):
    from warmfast.model.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"), n_adapters=2, max_position_embeddings=64)


def run_main(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of main(argv); SystemExit (argparse) is a status too."""
    capsys.readouterr()
    try:
        code = main(["-q", *argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def expect_error(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


# ---- helpers that build bad inputs ----------------------------------------------------------------
def write_rows(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def copy_model(t, dst: Path) -> Path:
    shutil.copytree(t.model_dir, dst)
    return dst


def copy_adapter(t, dst: Path, i: int = 0, **conf_changes) -> Path:
    shutil.copytree(t.adapters[f"adapter_{i}"], dst)
    if conf_changes:
        p = dst / "adapter_config.json"
        conf = json.loads(p.read_text())
        for k, v in conf_changes.items():
            if v is _DROP:
                conf.pop(k, None)
            else:
                conf[k] = v
        p.write_text(json.dumps(conf))
    return dst


_DROP = object()


def edit_tensors(path: Path, fn) -> None:
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---- score / generate cases: (id, command, rows or None, extra argv builder, expected needles) ----
@dataclass
class Case:
    id: str
    build: Callable  # (t, tmp) -> argv (without "-q")
    needles: tuple = ()


def score(rows, *extra, model=None, adapters=True):
    def build(t, tmp):
        inp = rows(t, tmp) if callable(rows) else write_rows(tmp / "in.jsonl", rows)
        m = model(t, tmp) if callable(model) else (model or str(t.model_dir))
        ad = ["--adapter", f"warm={t.adapters['adapter_0']}"] if adapters else []
        ex = [e(t, tmp) if callable(e) else e for e in extra]
        return ["score", "--model", str(m), *ad, "--input", str(inp), "--output", str(tmp / "out.jsonl"), *ex]
    return build


def generate(rows, *extra):
    def build(t, tmp):
        inp = write_rows(tmp / "in.jsonl", rows)
        return ["generate", "--model", str(t.model_dir), "--adapter", f"warm={t.adapters['adapter_0']}",
                "--input", str(inp), "--output", str(tmp / "out.jsonl"), "--max-new-tokens", "3", *extra]
    return build


OK = {"context": "The capital of France is", "continuation": " Paris."}
P = {"prompt": "Hello"}


def with_adapter(fn):
    """A score command with adapter `bad` built by fn(t, tmp) -> folder."""
    def build(t, tmp):
        inp = write_rows(tmp / "in.jsonl", [OK])
        return ["score", "--model", str(t.model_dir), "--adapter", f"bad={fn(t, tmp)}", "--input", str(inp),
                "--output", str(tmp / "out.jsonl")]
    return build


def bad_model(fn):
    return score([OK], model=lambda t, tmp: fn(t, tmp), adapters=False)


def _nan_weights(t, tmp):
    m = copy_model(t, tmp / "m")
    edit_tensors(m / "model.safetensors", lambda d: d["model.layers.0.mlp.up_proj.weight"].__setitem__((0, 0), float("nan")))
    return m


def _adapter_tensors(fn, i=0):
    def build(t, tmp):
        a = copy_adapter(t, tmp / "a", i)
        edit_tensors(a / "adapter_model.safetensors", fn)
        return a
    return build


def _first(d, part):
    return next(k for k in sorted(d) if part in k)


ENGINE_CASES = [
    # ---- score rows
    Case("score-unknown-field", score([{**OK, "adaptor": "warm"}]), ("in.jsonl line 1", "'adaptor'", "did you mean 'adapter'")),
    Case("score-missing-context", score([{"continuation": " b"}]), ("line 1", "give exactly one of 'context' (text or token ids) or 'messages'")),
    Case("score-missing-continuation", score([OK, {"context": "x"}]), ("line 2", "missing field 'continuation'")),
    Case("score-context-number", score([{**OK, "context": 5}]), ("field context", "string or a list of token ids", "int 5")),
    Case("score-context-dict", score([{**OK, "context": {"text": "a"}}]), ("field context", "dict")),
    Case("score-continuation-empty", score([{**OK, "continuation": ""}]), ("field continuation", "must not be empty")),
    Case("score-continuation-strings", score([{**OK, "continuation": ["a", "b"]}]), ("field continuation", "token ids")),
    Case("score-ids-negative", score([{**OK, "context": [1, -2]}]), ("field context", "integers >= 0")),
    Case("score-ids-bool", score([{**OK, "context": [True, 2]}]), ("field context",)),
    Case("score-ids-outside-vocab", score([OK, {**OK, "context": [1, 99999]}]), ("in.jsonl line 2", "outside the vocabulary [0, 512)")),
    Case("score-too-long", score([{**OK, "context": "word " * 200}]), ("in.jsonl line 1", "exceeds the maximum sequence length 64")),
    Case("score-adapter-not-loaded", score([{**OK, "adapter": "cold"}]), ("line 1", "adapter 'cold' is not loaded", "['warm']")),
    Case("score-adapter-none-loaded", score([{**OK, "adapter": "warm"}], adapters=False), ("no --adapter was given",)),
    Case("score-adapter-number", score([{**OK, "adapter": 3}]), ("field adapter",)),
    Case("score-row-list", score([[1, 2]]), ("line 1", "must be a JSON object", "list")),
    Case("score-row-string", score(['"just text"']), ("line 1", "must be a JSON object")),
    Case("score-invalid-json", score([OK, '{"context": "a", ']), ("in.jsonl line 2", "not valid JSON")),
    Case("score-empty-file", score(lambda t, tmp: (tmp / "in.jsonl").write_text("\n\n") and tmp / "in.jsonl"), ("no rows",)),
    Case("score-input-missing", score(lambda t, tmp: tmp / "nope.jsonl"), ("nope.jsonl", "file not found")),
    Case("score-input-folder", score(lambda t, tmp: (tmp / "d.jsonl").mkdir() or tmp / "d.jsonl"), ("is a folder",)),
    Case("score-input-not-utf8", score(lambda t, tmp: (tmp / "in.jsonl").write_bytes(b'{"context": "\xff\xfe"}\n') and tmp / "in.jsonl"),
         ("not UTF-8",)),
    Case("score-openai-model-field", score([{**OK, "model": "gpt-4o"}]), ("'model' is not supported", "--model")),
    Case("score-openai-logprobs-field", score([{**OK, "logprobs": True}]), ("'logprobs' is not supported",)),
    # ---- generate rows
    Case("gen-max-new-tokens-text", generate([{**P, "max_new_tokens": "ten"}]), ("field max_new_tokens", "'ten'")),
    Case("gen-max-new-tokens-zero", generate([{**P, "max_new_tokens": 0}]), ("field max_new_tokens", "integer >= 1")),
    Case("gen-max-tokens-float", generate([{**P, "max_tokens": 2.5}]), ("field max_tokens (= max_new_tokens)",)),
    Case("gen-both-max-spellings", generate([{**P, "max_tokens": 2, "max_new_tokens": 3}]), ("both give max_new_tokens",)),
    Case("gen-temperature-negative", generate([{**P, "temperature": -1}]), ("field temperature", "[0.0, inf]", "-1")),
    Case("gen-temperature-text", generate([{**P, "temperature": "hot"}]), ("field temperature", "'hot'")),
    Case("gen-temperature-bool", generate([{**P, "temperature": True}]), ("field temperature",)),
    Case("gen-top-p-zero", generate([{**P, "top_p": 0}]), ("field top_p", "(0.0, 1.0]")),
    Case("gen-top-p-big", generate([{**P, "top_p": 1.5}]), ("field top_p",)),
    Case("gen-top-k-negative", generate([{**P, "top_k": -1}]), ("field top_k", "integer >= 0")),
    Case("gen-top-k-float", generate([{**P, "top_k": 2.5}]), ("field top_k",)),
    Case("gen-min-p-one", generate([{**P, "min_p": 1.0}]), ("field min_p", "[0.0, 1.0)")),
    Case("gen-seed-negative", generate([{**P, "seed": -1}]), ("field seed",)),
    Case("gen-seed-text", generate([{**P, "seed": "x"}]), ("field seed",)),
    Case("gen-stop-number", generate([{**P, "stop": 5}]), ("field stop", "a string or a list")),
    Case("gen-stop-empty-string", generate([{**P, "stop": ["", "x"]}]), ("field stop",)),
    Case("gen-request-id-negative", generate([{**P, "request_id": -1}]), ("field request_id",)),
    Case("gen-request-id-huge", generate([{**P, "request_id": 2**64}]), ("field request_id",)),
    Case("gen-n-zero", generate([{**P, "n": 0}]), ("field n", "integer >= 1")),
    Case("gen-n-text", generate([{**P, "n": "2"}]), ("field n",)),
    Case("gen-prompt-and-messages", generate([{**P, "messages": [{"role": "user", "content": "x"}]}]), ("exactly one of 'prompt'", "both")),
    Case("gen-neither", generate([{"adapter": "warm"}]), ("exactly one of 'prompt'", "neither")),
    Case("gen-message-without-role", generate([{"messages": [{"content": "hi"}]}]), ("field messages", "[0] lacks 'role'")),
    Case("gen-message-bad-role", generate([{"messages": [{"role": "robot", "content": "hi"}]}]), ("[0].role must be one of",)),
    Case("gen-message-content-number", generate([{"messages": [{"role": "user", "content": 5}]}]), ("[0].content must be a string",)),
    Case("gen-messages-string", generate([{"messages": "hi"}]), ("field messages", "non-empty list")),
    Case("gen-messages-empty", generate([{"messages": []}]), ("field messages",)),
    Case("gen-message-extra-key", generate([{"messages": [{"role": "user", "content": "hi", "tool": 1}]}]), ("unknown key(s) ['tool']",)),
    Case("gen-typo-temperature", generate([{**P, "temprature": 0.5}]), ("'temprature'", "did you mean 'temperature'")),
    Case("gen-typo-max-token", generate([{**P, "max_token": 5}]), ("did you mean 'max_tokens'",)),
    Case("gen-frequency-penalty", generate([{**P, "frequency_penalty": 0.5}]), ("'frequency_penalty' is not supported",)),
    Case("gen-prompt-empty", generate([{"prompt": ""}]), ("field prompt", "must not be empty")),
    Case("gen-prompt-number", generate([{"prompt": 42}]), ("field prompt",)),
    Case("gen-prompt-too-long", generate([P, {"prompt": "word " * 100}]), ("in.jsonl line 2", "exceeds the maximum sequence length 64")),
    Case("gen-adapter-unknown", generate([{**P, "adapter": "cold"}]), ("adapter 'cold' is not loaded",)),
    Case("gen-flag-temperature", generate([P], "--temperature", "-1"), ("--temperature: must be a number in [0.0, inf], got -1.0",)),
    Case("gen-flag-top-p", generate([P], "--top-p", "2"), ("--top-p: must be a number in (0.0, 1.0]",)),
    Case("gen-flag-seed", generate([P], "--seed", "-3"), ("--seed: must be an integer >= 0 and < 2^64",)),
    Case("gen-cuda-graphs-on-cpu", generate([P], "--cuda-graphs"), ("cuda_graphs=True needs device cuda",)),
    # ---- flags and paths
    Case("out-missing-folder", lambda t, tmp: score([OK])(t, tmp)[:-2] + ["--output", str(tmp / "no" / "o.jsonl")],
         ("the folder", "does not exist")),
    Case("out-is-folder", lambda t, tmp: score([OK])(t, tmp)[:-2] + ["--output", str(tmp)], ("is a folder",)),
    Case("adapter-flag-syntax", lambda t, tmp: score([OK], adapters=False)(t, tmp) + ["--adapter", "warmdir"], ("NAME=DIR", "'warmdir'")),
    Case("adapter-flag-twice", lambda t, tmp: score([OK])(t, tmp) + ["--adapter", f"warm={t.adapters['adapter_1']}"], ("given twice",)),
    Case("device-gpu", lambda t, tmp: score([OK])(t, tmp) + ["--device", "gpu"], ("device 'gpu' is not a torch device; use cpu",)),
    Case("device-cuda-99", lambda t, tmp: score([OK])(t, tmp) + ["--device", "cuda:99"], ("cuda:99",)),
    Case("device-typo", lambda t, tmp: score([OK])(t, tmp) + ["--device", "cpux"], ("device 'cpux' is not a torch device",)),
    # ---- model folders
    Case("model-missing", bad_model(lambda t, tmp: tmp / "nowhere"), ("model folder", "does not exist", "config.json")),
    Case("model-hub-id", bad_model(lambda t, tmp: "meta-llama/Llama-3.1-8B"),
         ("looks like a Hugging Face hub id", "--local-dir", "tokenizer.json")),
    Case("model-no-config", bad_model(lambda t, tmp: (copy_model(t, tmp / "m") / "config.json").unlink() or tmp / "m"),
         ("config.json not found", "a model folder")),
    Case("model-config-not-json", bad_model(lambda t, tmp: (copy_model(t, tmp / "m") / "config.json").write_text("{oops") and tmp / "m"),
         ("config.json is not valid JSON",)),
    Case("model-unsupported-arch", bad_model(lambda t, tmp: _edit_config(t, tmp, architectures=["FalconForCausalLM"])),
         ("FalconForCausalLM", "is not supported")),
    Case("model-heads-not-divisible", bad_model(lambda t, tmp: _edit_config(t, tmp, num_key_value_heads=3)),
         ("num_key_value_heads=3",)),
    Case("model-no-weights", bad_model(lambda t, tmp: (copy_model(t, tmp / "m") / "model.safetensors").unlink() or tmp / "m"),
         ("no weights in",)),
    Case("model-truncated-weights", bad_model(lambda t, tmp: truncate(copy_model(t, tmp / "m") / "model.safetensors") or tmp / "m"),
         ("model.safetensors", "truncated or not safetensors")),
    Case("model-nan-weights", bad_model(_nan_weights), ("model.layers.0.mlp.up_proj.weight", "non-finite")),
    Case("model-no-tokenizer", bad_model(lambda t, tmp: (copy_model(t, tmp / "m") / "tokenizer.json").unlink() or tmp / "m"),
         ("no tokenizer in",)),
    # ---- adapters
    Case("adapter-missing", with_adapter(lambda t, tmp: tmp / "nope"), ("adapter 'bad'", "does not exist")),
    Case("adapter-no-weights", with_adapter(lambda t, tmp: (copy_adapter(t, tmp / "a") / "adapter_model.safetensors").unlink() or tmp / "a"),
         ("adapter_model.safetensors not found",)),
    Case("adapter-config-not-json", with_adapter(lambda t, tmp: (copy_adapter(t, tmp / "a") / "adapter_config.json").write_text("{r: 8") and tmp / "a"),
         ("adapter_config.json is not valid JSON",)),
    Case("adapter-r-zero", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", r=0)), ("r must be a positive integer", "got 0")),
    Case("adapter-r-text", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", r="eight")), ("r must be a positive integer", "'eight'")),
    Case("adapter-r-wrong", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", r=32)),
         ("has rank 8", "r=32", "disagree")),
    Case("adapter-r-missing-rank4", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", 1, r=_DROP)),
         ("has rank 4", "r=8")),  # PEFT's default r is 8; these weights are rank 4
    Case("adapter-rank-pattern-wrong", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", rank_pattern={"q_proj": 4})),
         ("q_proj", "r=4 (rank_pattern)",)),
    Case("adapter-alpha-text", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", lora_alpha="16")), ("lora_alpha must be a number",)),
    Case("adapter-rslora-text", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", use_rslora="yes")), ("use_rslora",)),
    Case("adapter-targets-unknown", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", target_modules=["q_prj"])),
         ("['q_prj'] not found in the base model", "q_proj")),
    Case("adapter-targets-miss-weights", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", target_modules=["q_proj"])),
         ("does not cover",)),
    Case("adapter-targets-number", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", target_modules=7)), ("target_modules must be",)),
    Case("adapter-dora", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", use_dora=True)), ("DoRA",)),
    Case("adapter-lm-head", with_adapter(lambda t, tmp: copy_adapter(t, tmp / "a", target_modules=["q_proj", "lm_head"])), ("lm_head",)),
    Case("adapter-truncated", with_adapter(lambda t, tmp: truncate(copy_adapter(t, tmp / "a") / "adapter_model.safetensors") or tmp / "a"),
         ("adapter_model.safetensors", "truncated or not safetensors")),
    Case("adapter-shape-mismatch", with_adapter(_adapter_tensors(
        lambda d: d.__setitem__(_first(d, "q_proj.lora_B"), torch.randn(72, 8)))), ("lora_B (72, 8)", "out_features=64")),
    Case("adapter-nan", with_adapter(_adapter_tensors(
        lambda d: d[_first(d, "v_proj.lora_A")].__setitem__((0, 0), float("inf")))), ("non-finite",)),
    Case("adapter-only-A", with_adapter(_adapter_tensors(lambda d: d.pop(_first(d, "o_proj.lora_B")))), ("not both lora_A and lora_B",)),
    Case("adapter-deeper-model", with_adapter(_adapter_tensors(
        lambda d: d.__setitem__(_first(d, "layers.1.self_attn.q_proj.lora_A").replace("layers.1", "layers.5"),
                                d[_first(d, "layers.1.self_attn.q_proj.lora_A")].clone()))), ("layer 5, the model has 2 layers",)),
]


def _edit_config(t, tmp, **changes):
    m = copy_model(t, tmp / "m")
    conf = json.loads((m / "config.json").read_text())
    conf.update(changes)
    (m / "config.json").write_text(json.dumps(conf))
    return m


@pytest.mark.parametrize("case", ENGINE_CASES, ids=[c.id for c in ENGINE_CASES])
def test_engine_command_refuses_with_one_line(case, t, tmp_path, capsys):
    (tmp_path / "out.jsonl").write_text(PREVIOUS)  # an earlier result: never clobbered by a failure
    code, err = run_main(case.build(t, tmp_path), capsys)
    expect_error(code, err, *case.needles)
    assert err.startswith("warmfast score: ") or err.startswith("warmfast generate: ")
    assert (tmp_path / "out.jsonl").read_text() == PREVIOUS


# ---- run configs and run folders -------------------------------------------------------------------
def base_config(t, out: Path) -> dict:
    return {"name": "bad", "output_dir": str(out),
            "model": {"name": "tiny", "path": str(t.model_dir)},
            "arms": {"original": {"kind": "original"}, "warm": {"kind": "adapter", "adapter": str(t.adapters["adapter_0"])}},
            "tasks": {"disinfo": {"n": 1}}, "generation": {"max_new_tokens": 2},
            "judge": {"kind": "none"}, "export": ["csv"]}


def seeded_store(path: Path) -> str:
    """A store holding one finished generation; returns its content digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Store(path) as st:
        job = JobRecord.from_spec("generate", "tiny", "original", "disinfo", {"x": 1}, {})
        st.add_jobs([job])
        st.add_generations([Generation(job.key, "kept", [1, 2], "length", 2)])
        return _digest(st)


def _digest(st: Store) -> str:
    return hashlib.sha256(repr(st.content_snapshot()).encode()).hexdigest()


def _set(path: str, value):
    def edit(c):
        node = c
        *head, last = path.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    return edit


RUN_CASES = [
    ("yaml-duplicate-key", lambda c, p: p.write_text(yaml.safe_dump(c) + "name: again\n"), ("duplicate key 'name'",)),
    ("yaml-duplicate-nested", lambda c, p: p.write_text(yaml.safe_dump(c).replace("  max_new_tokens: 2\n",
                                                                                  "  max_new_tokens: 2\n  max_new_tokens: 3\n")),
     ("duplicate key 'max_new_tokens'",)),
    ("yaml-syntax", lambda c, p: p.write_text("name: x\n  output_dir: [unclosed\n"), ("not valid YAML", "bad.yaml:")),
    ("yaml-tab", lambda c, p: p.write_text("name: x\n\toutput_dir: y\n"), ("not valid YAML",)),
    ("yaml-list", lambda c, p: p.write_text("- a\n- b\n"), ("a run config is a YAML mapping",)),
    ("yaml-not-utf8", lambda c, p: p.write_bytes(b"name: \xff\n"), ("not UTF-8",)),
    ("config-missing", lambda c, p: p.unlink(), ("run config not found",)),
    ("config-is-folder", lambda c, p: p.unlink() or p.mkdir(), ("a folder, not a file",)),
    ("unknown-key-typo", lambda c, p: _dump(c, p, _set("modle", {})), ("modle: unknown key", "did you mean 'model'")),
    ("unknown-nested-typo", lambda c, p: _dump(c, p, _set("generation.temprature", 0.5)), ("did you mean 'temperature'",)),
    ("device-gpu", lambda c, p: _dump(c, p, _set("model.device", "gpu")), ("model.device", "'gpu'")),
    ("dtype-fp16", lambda c, p: _dump(c, p, _set("model.dtype", "fp16")), ("model.dtype", "'fp16'")),
    ("max-new-tokens-text", lambda c, p: _dump(c, p, _set("generation.max_new_tokens", "ten")), ("generation.max_new_tokens",)),
    ("temperature-negative", lambda c, p: _dump(c, p, _set("generation.temperature", -0.5)), ("generation.temperature",)),
    ("tensor-parallel-zero", lambda c, p: _dump(c, p, _set("model.tensor_parallel", 0)), ("tensor_parallel",)),
    ("judge-url-no-scheme", lambda c, p: _dump(c, p, _set("judge", {"kind": "openai", "base_url": "api.openai.com/v1", "model": "m"})),
     ("judge.base_url", "http://")),
    ("judge-retries-negative", lambda c, p: _dump(c, p, _set("judge", {"kind": "openai", "base_url": "http://x/v1", "model": "m",
                                                                        "max_retries": -1})), ("judge.max_retries",)),
    ("judge-device", lambda c, p: _dump(c, p, _set("judge", {"kind": "logprob", "device": "tpu"})), ("judge.device",)),
    ("arm-kind", lambda c, p: _dump(c, p, _set("arms.warm.kind", "adaptor")), ("arms.warm.kind",)),
    ("task-unknown", lambda c, p: _dump(c, p, _set("tasks", {"trivia": {"n": 1}})), ("trivia",)),
    ("model-path-missing", lambda c, p: _dump(c, p, _set("model.path", "/nowhere/model")), ("/nowhere/model",)),
    ("prompt-too-long", lambda c, p: _dump(c, p, _set("generation.max_new_tokens", 2)), ("task disinfo, arm", "exceeds the maximum sequence length 64")),
    ("model-config-not-json", lambda c, p: _dump(c, p, _set("model.path", _broken_copy(c, p, "model", "config.json", b"{nope"))),
     ("config.json is not valid JSON",)),
    ("model-truncated", lambda c, p: _dump(c, p, _set("model.path", _broken_copy(c, p, "model", "model.safetensors", None))),
     ("model.safetensors", "truncated or not safetensors")),
    ("adapter-r-text", lambda c, p: _dump(c, p, _set("arms.warm.adapter", _adapter_conf(c, p, r="eight"))),
     ("r must be a positive integer", "'eight'")),
    ("adapter-r-zero", lambda c, p: _dump(c, p, _set("arms.warm.adapter", _adapter_conf(c, p, r=0))), ("got 0",)),
    ("adapter-conf-not-json", lambda c, p: _dump(c, p, _set("arms.warm.adapter", _broken_copy(c, p, "adapter", "adapter_config.json", b"{"))),
     ("arms.warm.adapter", "adapter_config.json is not valid JSON")),
    ("adapter-arm-missing", lambda c, p: _dump(c, p, _set("arms.warm.adapter", "/nowhere/adapter")), ("/nowhere/adapter",)),
]


def _broken_copy(c, p, what, name, content):
    """A copy of the config's model folder (what="model") or warm adapter with file `name` replaced by
    `content` (None: cut to half its length); returns the copy's path."""
    src = Path(c["model"]["path"] if what == "model" else c["arms"]["warm"]["adapter"])
    dst = p.parent / f"broken_{what}"
    shutil.copytree(src, dst)
    if content is None:
        truncate(dst / name)
    else:
        (dst / name).write_bytes(content)
    return str(dst)


def _adapter_conf(c, p, **changes):
    dst = p.parent / "edited_adapter"
    shutil.copytree(c["arms"]["warm"]["adapter"], dst)
    conf = json.loads((dst / "adapter_config.json").read_text())
    (dst / "adapter_config.json").write_text(json.dumps({**conf, **changes}))
    return str(dst)


def _dump(c, p, edit):
    edit(c)
    p.write_text(yaml.safe_dump(c))


@pytest.mark.parametrize("case", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_config_refuses_with_one_line(case, t, tmp_path, capsys):
    name, make, needles = case
    out = tmp_path / "run"
    before = seeded_store(out / "store.sqlite")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("placeholder: 1\n")
    make(base_config(t, out), cfg)
    code, err = run_main(["run", str(cfg), "--no-progress"], capsys)
    expect_error(code, err, *needles)
    with Store(out / "store.sqlite") as st:
        # the earlier result is there (a failure at model load may have listed the plan's jobs, no more)
        assert [g[1] for g in st.content_snapshot()["generations"]] == ["kept"]
        assert _digest(st) == before or name.startswith(("prompt-", "model-", "adapter-r-"))


def _store_bad(kind):
    def make(out: Path):
        out.mkdir(parents=True, exist_ok=True)
        s = out / "store.sqlite"
        if kind == "garbage":
            s.write_bytes(b"this is not a database" * 100)
        elif kind == "folder":
            s.mkdir()
        elif kind == "truncated":
            seeded_store(s)
            truncate(s)
        elif kind == "newer-schema":
            seeded_store(s)
            import sqlite3
            db = sqlite3.connect(s)
            db.execute("UPDATE store_info SET value='99' WHERE name='schema_version'")
            db.commit()
            db.close()
    return make


STORE_CASES = [
    ("store-garbage", lambda out: _store_bad("garbage")(out), ("store.sqlite", "not a warmfast store")),
    ("store-folder", lambda out: _store_bad("folder")(out), ("is a folder",)),
    ("store-truncated", lambda out: _store_bad("truncated")(out), ("store.sqlite",)),
    ("store-newer-schema", lambda out: _store_bad("newer-schema")(out), ("schema version 99",)),
    ("output-dir-is-file", lambda out: out.write_text("I am a file"), ("output_dir", "a file, not a folder")),
    ("output-dir-under-file", lambda out: out.write_text("file") and None, ("a file, not a folder",)),
]


@pytest.mark.parametrize("case", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_unusable_run_folder_is_one_line_and_left_as_it_was(case, t, tmp_path, capsys):
    name, make, needles = case
    out = tmp_path / "run"
    make(out)
    target = out / "store.sqlite" if out.is_dir() else out
    snapshot = target.read_bytes() if target.is_file() else None
    c = base_config(t, out / "sub" if name == "output-dir-under-file" else out)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(c))
    code, err = run_main(["run", str(cfg), "--no-progress"], capsys)
    expect_error(code, err, *needles)
    if snapshot is not None:
        assert target.read_bytes() == snapshot  # a damaged store is reported, never rewritten


def test_second_run_on_a_locked_folder_refuses(t, tmp_path, capsys):
    from warmfast.run.lock import RunLock

    out = tmp_path / "run"
    before = seeded_store(out / "store.sqlite")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base_config(t, out)))
    with RunLock(out / "store.sqlite"):  # another run holds it (flock: any other open file conflicts)
        code, err = run_main(["run", str(cfg), "--no-progress"], capsys)
    expect_error(code, err, "is in use by another warmfast run", "pid", "host")
    with Store(out / "store.sqlite") as st:
        assert _digest(st) == before


# ---- correct acceptance: valid inputs with OpenAI spellings or odd-but-valid forms ------------------
def test_valid_rows_are_accepted_with_their_meaning(t, tmp_path, capsys):
    """OpenAI's max_tokens, stop as one string and n; top_k/top_p/min_p/request_id in rows; id and
    metadata carried through; adapter 'base' and null."""
    import warmfast as wf

    eng = wf.Engine.from_pretrained(t.model_dir, adapters={"warm": t.adapters["adapter_0"]})
    greedy = eng.generate([wf.GenerateRequest(prompt="Hello there", max_new_tokens=6)])[0]
    sampled = eng.generate([wf.GenerateRequest(prompt="Hello there", max_new_tokens=6, temperature=1.5,
                                               request_id=11, seed=3)])[0]
    assert sampled.token_ids != greedy.token_ids  # else the checks below could not fail
    stop = greedy.text[2:5]
    assert stop and greedy.text.index(stop) == 2
    rows = [{"prompt": "Hello there", "max_tokens": 6, "id": "a", "metadata": {"k": [1]}},
            {"prompt": "Hello there", "max_tokens": 6, "temperature": 1.5, "top_k": 1},
            {"prompt": "Hello there", "max_tokens": 6, "temperature": 1.5, "top_p": 1e-6},
            {"prompt": "Hello there", "max_tokens": 6, "temperature": 1.5, "min_p": 0.999},
            {"prompt": "Hello there", "max_tokens": 6, "temperature": 1.5, "request_id": 11, "seed": 3},
            {"prompt": "Hello there", "max_completion_tokens": 6, "stop": stop},
            {"prompt": "Hello there", "max_tokens": 6, "stop": stop + "\u0001never"},
            {"prompt": "Hello there", "max_tokens": 6, "temperature": 1.5, "n": 3, "adapter": "base"},
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "adapter": None}]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    code, err = run_main(["generate", "--model", str(t.model_dir), "--adapter", f"warm={t.adapters['adapter_0']}",
                          "--input", str(inp), "--output", str(tmp_path / "o.jsonl"), "--ordered"], capsys)
    assert code == 0, err
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert out[0]["token_ids"] == greedy.token_ids and out[0]["id"] == "a" and out[0]["metadata"] == {"k": [1]}
    for i in (1, 2, 3):  # top_k 1 / top_p ~0 / min_p ~1 at temperature 1.5 are greedy: honoured, not dropped
        assert out[i]["token_ids"] == greedy.token_ids, rows[i]
    assert out[4]["token_ids"] == sampled.token_ids  # request_id and seed from the row
    assert out[5]["text"] == greedy.text[:2] and out[5]["finish_reason"] == "stop"  # one stop string, not characters
    assert out[6]["token_ids"] == greedy.token_ids  # a string that never appears stops nothing
    choices = out[7]["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2] and len({tuple(c["token_ids"]) for c in choices}) > 1
    assert "text" not in out[7] and len(out[8]["token_ids"]) <= 2


def test_score_rows_accept_token_ids_base_and_passthrough(t, tmp_path, capsys):
    rows = [{"context": [1, 5, 9], "continuation": [7, 8], "adapter": "base", "id": 1},
            {"context": "Hi", "continuation": " there", "adapter": None, "metadata": None}]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    code, err = run_main(["score", "--model", str(t.model_dir), "--input", str(inp), "--output",
                          str(tmp_path / "o.jsonl")], capsys)
    assert code == 0, err
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert out[0]["id"] == 1 and out[0]["num_tokens"] == 2 and "metadata" in out[1]


def test_adapter_without_r_takes_peft_defaults(t, tmp_path, capsys):
    """PEFT's LoraConfig defaults r=8, lora_alpha=8: a rank-8 adapter saved without them loads, and
    scores as the same adapter with r and lora_alpha written out."""
    import warmfast as wf

    full = copy_adapter(t, tmp_path / "full", 0, lora_alpha=8)
    bare = copy_adapter(t, tmp_path / "bare", 0, r=_DROP, lora_alpha=_DROP)
    eng = wf.Engine.from_pretrained(t.model_dir, adapters={"full": full, "bare": bare})
    a, b = eng.score([wf.ScoreRequest("Hello", " world", "full"), wf.ScoreRequest("Hello", " world", "bare")])
    assert a.logprob == b.logprob


# ---- the HTTP judge: malformed replies retried, an unreachable judge stops the run, work kept ------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A run folder whose 28 generations are done (`run --generate-only`); judge cases reuse it."""
    from warmfast.model.tiny import build_tiny

    t = build_tiny(tmp_path_factory.mktemp("tiny1k"), n_adapters=1, max_position_embeddings=1024)
    out = tmp_path_factory.mktemp("judged") / "run"
    c = base_config(t, out)
    c["arms"] = {"original": {"kind": "original"}}
    cfg = out.parent / "gen.yaml"
    cfg.write_text(yaml.safe_dump(c))
    assert main(["-q", "run", str(cfg), "--generate-only", "--no-progress"]) == 0
    return c


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("reply,needles", [
    ([b"<html><body>502 Bad Gateway</body></html>"] * 99, ("still failing after 3 tries", "not JSON", "<html>")),
    ([b'{"id": "x", "object": "chat.completion"}'] * 99, ("still failing after 3 tries", "without choices[0].message.content")),
    ([b'{"choices": [{"message": {"content": null}}]}'] * 99, ("non-text message content",)),
    ([500] * 999, ("still failing after 3 tries", "HTTP 500")),
    ([401], ("HTTP 401",)),
    (None, ("cannot reach http://127.0.0.1:", "after 3 tries")),
], ids=["html", "no-choices", "null-content", "http-500", "http-401", "unreachable"])
def test_failing_judge_stops_with_one_line_and_keeps_generations(generated, reply, needles, tmp_path, capsys, monkeypatch):
    from test_openai_client import FakeEndpoint

    monkeypatch.setenv("WARMFAST_TEST_KEY", "sk-test")
    ep = FakeEndpoint(script=reply) if reply is not None else None
    url = ep.base_url if ep is not None else f"http://127.0.0.1:{_closed_port()}/v1"
    c = dict(generated, judge={"kind": "openai", "base_url": url, "model": "m", "api_key_env": "WARMFAST_TEST_KEY",
                               "backoff_s": 0.001, "max_retries": 2, "timeout_s": 5, "concurrency": 1})
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(yaml.safe_dump(c))
    store = Path(c["output_dir"]) / "store.sqlite"
    with Store(store) as st:
        before = st.content_snapshot()["generations"]
    try:
        code, err = run_main(["judge", str(cfg), "--no-progress"], capsys)
    finally:
        if ep is not None:
            ep.close()
    expect_error(code, err, *needles)
    assert "sk-test" not in err
    if reply is not None and reply[0] != 401:
        # bounded: a request tried max_retries + 1 times stops the run (with concurrency 1, the next
        # request is already in flight when the first gives up, and ends the same way)
        assert len(ep.seen) in (3, 6)
    with Store(store) as st:
        assert st.content_snapshot()["generations"] == before and len(before) == 28


def test_judge_answering_after_malformed_replies_completes(generated, tmp_path, capsys, monkeypatch):
    from test_openai_client import FakeEndpoint

    monkeypatch.setenv("WARMFAST_TEST_KEY", "sk-test")
    ep = FakeEndpoint(script=[b"<html>busy</html>", b"{}", 503])
    c = dict(generated, output_dir=generated["output_dir"],
             judge={"kind": "openai", "base_url": ep.base_url, "model": "m", "api_key_env": "WARMFAST_TEST_KEY",
                    "backoff_s": 0.001, "max_retries": 3, "concurrency": 1})
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(yaml.safe_dump(c))
    try:
        code, err = run_main(["judge", str(cfg), "--no-progress"], capsys)
    finally:
        ep.close()
    assert code == 0, err
    bodies = {json.dumps(x["body"], sort_keys=True) for x in ep.seen}
    assert len(ep.seen) == len(bodies) + 3  # each distinct request answered once, after three retried tries


def test_training_configs_refuse_duplicate_keys(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: a\nepochs: 1\nepochs: 2\n")
    code, err = run_main(["train", str(cfg)], capsys)
    expect_error(code, err, "train.yaml:3:1", "duplicate key 'epochs' (first at line 2)")
    cfg.write_text("style: warm\nstyle: cold\n")
    code, err = run_main(["rewrite", str(cfg), "--style", "warm", "--input", "x.jsonl", "--output-dir", str(tmp_path)], capsys)
    expect_error(code, err, "duplicate key 'style'")


@pytest.mark.parametrize("exc,status,text", [(KeyboardInterrupt, 130, "interrupted (Ctrl-C)"),
                                              ("sigterm", 143, "terminated (SIGTERM)")])
def test_interrupted_score_is_one_line(t, tmp_path, capsys, monkeypatch, exc, status, text):
    import os
    import signal
    import time

    import warmfast as wf

    def interrupted(self, *a, **k):
        if exc == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # main()'s handler raises where this thread is
            time.sleep(5)
        raise exc

    monkeypatch.setattr(wf.Engine, "score", interrupted)
    (tmp_path / "out.jsonl").write_text(PREVIOUS)
    code, err = run_main(score([OK])(t, tmp_path), capsys)
    assert code == status and err.strip() == f"warmfast score: {text}"
    assert (tmp_path / "out.jsonl").read_text() == PREVIOUS
