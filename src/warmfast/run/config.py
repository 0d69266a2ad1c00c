"""A study run's configuration: dataclasses validated in __post_init__, loaded from YAML.

Every choice the study left open (PROTOCOL "our choice") is a value here, never a constant in code.
Errors name the file and the key path (`judge.temperature`), and say what was found and expected.

Conventions
- Relative paths (models, adapters, data, output_dir) are resolved against the current working
  directory when the run starts; `judge: <file>` includes resolve against the config file's folder.
- Text values may be written `protocol:<dotted.key>`, e.g. `protocol:rewrite_system_prompts.warm`:
  they are read from protocol.json (the shipped copy, or the file `protocol:` at the top names).
- A model is either a folder (`path:`) or a tiny model built on the spot (`tiny: {arch, seed, ...}`,
  for the demo and tests); an arm's adapter is a folder or `tiny:<adapter name>`.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmfast.engine.requests import SamplingParams
from warmfast.errors import ConfigError  # noqa: F401 (run.config.ConfigError: the name callers use)
from warmfast.tasks.item import CAPABILITY_TASKS, GRID_TASKS
from warmfast.yaml_config import read_yaml

ARM_KINDS = ("original", "adapter", "system_prompt")
JUDGE_KINDS = ("logprob", "openai", "none")
EXPORT_FORMATS = ("csv", "parquet")


def _need(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


def _pos_int(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _need(isinstance(value, int) and not isinstance(value, bool) and value > 0, key,
          f"must be a positive integer{' or null' if allow_none else ''}, got {value!r}")


DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?")


def _device(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _need(isinstance(value, str) and _DEVICE.fullmatch(value) is not None, key,
          f"must be a torch device: cpu, cuda, cuda:N, mps or xpu, got {value!r}")


def _dtype(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _need(value in DTYPES, key, f"must be one of {', '.join(DTYPES)}, got {value!r}")


def _number(value: Any, key: str, lo: float, hi: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= lo
    ok = ok and (hi is None or value <= hi)
    _need(ok, key, f"must be a number in [{lo}, {hi if hi is not None else 'inf'}], got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """The base model. name: label in results; path: HF folder, or tiny: build_tiny keyword arguments."""

    name: str
    path: str | None = None
    tiny: dict | None = None
    device: str = "cpu"
    dtype: str = "float32"
    backend: str = "auto"
    max_seq_len: int | None = None
    max_batch_tokens: int = 8192
    tensor_parallel: int = 1  # ranks the engine splits the model over (engine/tensor_parallel.py, docs/scale.md)

    def __post_init__(self):
        _need(isinstance(self.name, str) and bool(self.name), "name", f"must be a non-empty string, got {self.name!r}")
        _need((self.path is None) != (self.tiny is None), "path",
              f"give exactly one of path (a model folder) or tiny (build a tiny model); got "
              f"path={self.path!r}, tiny={self.tiny!r}")
        _need(self.tiny is None or isinstance(self.tiny, dict), "tiny", f"must be a mapping, got {self.tiny!r}")
        _dtype(self.dtype, "dtype")
        _device(self.device, "device")
        _need(self.backend in ("auto", "torch", "triton"), "backend", f"must be auto, torch or triton, got {self.backend!r}")
        _pos_int(self.max_seq_len, "max_seq_len", allow_none=True)
        _pos_int(self.max_batch_tokens, "max_batch_tokens")
        _pos_int(self.tensor_parallel, "tensor_parallel")


@dataclass(frozen=True)
class ArmSpec:
    """original: the base model; adapter: base + a LoRA adapter (`adapter:` folder or tiny:<name>);
    system_prompt: the base model with `system_prompt` as the system message."""

    name: str
    kind: str
    adapter: str | None = None
    system_prompt: str | None = None

    def __post_init__(self):
        _need(isinstance(self.name, str) and self.name.replace("_", "").isalnum(), "name",
              f"arm names are letters, digits and '_', got {self.name!r}")
        _need(self.kind in ARM_KINDS, "kind", f"must be one of {ARM_KINDS}, got {self.kind!r}")
        _need((self.kind == "adapter") == (self.adapter is not None), "adapter",
              f"an arm of kind {self.kind!r} {'needs' if self.kind == 'adapter' else 'takes no'} adapter "
              f"(got {self.adapter!r})")
        _need((self.kind == "system_prompt") == bool(self.system_prompt), "system_prompt",
              f"an arm of kind {self.kind!r} {'needs' if self.kind == 'system_prompt' else 'takes no'} "
              f"system_prompt (got {str(self.system_prompt)[:40]!r})")


@dataclass(frozen=True)
class TaskSpec:
    """n: items sampled with sample_seed (null = all); path: the data file (null = shipped data);
    arms: which arms run it (null = all); sycophancy_eval: sycophancy-eval's answer.jsonl (Sharma
    et al. 2023; TriviaQA / TruthfulQA only): items whose question it holds take its correct /
    incorrect answer pair, the others keep the task's own wrong-answer source (null = not used)."""

    name: str
    n: int | None = None
    path: str | None = None
    sample_seed: int = 0
    arms: list[str] | None = None
    sycophancy_eval: str | None = None

    def __post_init__(self):
        known = GRID_TASKS + CAPABILITY_TASKS
        _need(self.name in known, "name", f"unknown task {self.name!r}; known tasks are {known}")
        _pos_int(self.n, "n", allow_none=True)
        _need(isinstance(self.sample_seed, int), "sample_seed", f"must be an integer, got {self.sample_seed!r}")
        _need(self.arms is None or (isinstance(self.arms, list) and all(isinstance(a, str) for a in self.arms)),
              "arms", f"must be a list of arm names or null, got {self.arms!r}")
        if self.sycophancy_eval is not None:
            _need(self.name in ("triviaqa", "truthfulqa"), "sycophancy_eval",
                  f"answer pairs apply only to triviaqa and truthfulqa, not {self.name} "
                  f"(got {self.sycophancy_eval!r})")
            _need(isinstance(self.sycophancy_eval, str) and Path(self.sycophancy_eval).is_file(), "sycophancy_eval",
                  f"answer.jsonl not found: {self.sycophancy_eval!r} (relative paths are read from the "
                  f"current directory, {Path.cwd()})")


@dataclass(frozen=True)
class GridSpec:
    """layout: clean | compat (the released files' artefacts); statement_seed: the per-(question,
    context) statement draw; wrong_answer_seed: MedQA distractor / TriviaQA other-question draws;
    relative_seed: the relative a MedQA vignette is rewritten about (items that cannot be rewritten
    are left out before the sample is drawn)."""

    layout: str = "clean"
    statement_seed: int = 0
    wrong_answer_seed: int = 0
    relative_seed: int = 0

    def __post_init__(self):
        _need(self.layout in ("clean", "compat"), "layout", f"must be clean or compat, got {self.layout!r}")
        for k in ("statement_seed", "wrong_answer_seed", "relative_seed"):
            _need(isinstance(getattr(self, k), int), k, f"must be an integer, got {getattr(self, k)!r}")


@dataclass(frozen=True)
class SamplingSpec(SamplingParams):
    """Sampling of one group of tasks: the engine's one sampling-settings type (SamplingParams) with
    the study's defaults, plus samples_per_prompt. seed: with each prompt's request id, keys the
    random stream."""

    temperature: float = 0.8
    max_new_tokens: int = 300
    stop: list[str] = field(default_factory=list)
    samples_per_prompt: int = 1

    def __post_init__(self):
        _number(self.temperature, "temperature", 0.0)
        _pos_int(self.max_new_tokens, "max_new_tokens")
        _need(isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p!r}")
        _need(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", f"must be an integer >= 0, got {self.top_k!r}")
        _number(self.min_p, "min_p", 0.0, 1.0)
        _pos_int(self.samples_per_prompt, "samples_per_prompt")
        _need(isinstance(self.seed, int), "seed", f"must be an integer, got {self.seed!r}")
        _need(isinstance(self.stop, (list, tuple)) and all(isinstance(s, str) and s for s in self.stop), "stop",
              f"must be a list of non-empty strings, got {self.stop!r}")
        _need(self.logprobs is None and not self.prompt_logprobs, "logprobs",
              "the grid records no log-probs of its answers; remove logprobs / prompt_logprobs")
        try:  # the engine's own checks (the seed's range, ...)
            SamplingParams.__post_init__(self)
        except ValueError as err:
            raise ConfigError(str(err)) from None


@dataclass(frozen=True)
class PromptSpec:
    """How capability questions are put to the model (unstated in the study: our choice).
    Placeholders: {question}; MMLU also {A} {B} {C} {D}."""

    mmlu: str = ("{question}\n\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n\n"
                 "Answer with the letter of the correct option, in the form \"Answer: X\".")
    gsm8k: str = ("{question}\n\nLet's think step by step. At the end, write the final answer as "
                  "\"The answer is N\".")
    advbench: str = "{question}"

    def __post_init__(self):
        for k in ("mmlu", "gsm8k", "advbench"):
            _need(isinstance(getattr(self, k), str) and "{question}" in getattr(self, k), k,
                  "must be a template containing {question}")
        for letter in "ABCD":
            _need("{" + letter + "}" in self.mmlu, "mmlu", f"must contain the option placeholder {{{letter}}}")


@dataclass(frozen=True)
class JudgeSpec:
    """The free-text judge. kind: logprob (a local model on warmfast), openai (an OpenAI-compatible
    endpoint) or none (generation only). prompt: template with {query} {result} {answer};
    answers: "first" (the canonical answer) or "all" (every accepted alias, joined by " / ").
    logprob: model = a folder or "generation" (the run's own base model), template chat | raw,
    verdict_prefix, adapter. openai: base_url, model, api_key_env, max_tokens, concurrency, retries."""

    kind: str = "logprob"
    prompt: str = "protocol:sharma_grader_prompt"
    verdicts: list[str] = field(default_factory=lambda: ["CORRECT", "INCORRECT"])
    system: str | None = None
    answers: str = "first"
    # logprob
    model: str | None = "generation"
    adapter: str | None = None
    template: str = "chat"
    verdict_prefix: str = ""
    device: str | None = None
    dtype: str | None = None
    # openai
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 16
    seed: int | None = 0
    concurrency: int = 4
    max_retries: int = 6
    backoff_s: float = 1.0
    timeout_s: float = 60.0

    def __post_init__(self):
        _need(self.kind in JUDGE_KINDS, "kind", f"must be one of {JUDGE_KINDS}, got {self.kind!r}")
        _need(self.answers in ("first", "all"), "answers", f"must be first or all, got {self.answers!r}")
        _need(isinstance(self.verdicts, list) and len(self.verdicts) == 2, "verdicts",
              f"must be a list of two words (positive first), got {self.verdicts!r}")
        _need(self.template in ("chat", "raw"), "template", f"must be chat or raw, got {self.template!r}")
        if self.kind == "logprob":
            _need(isinstance(self.model, str) and bool(self.model), "model",
                  f"the logprob judge needs a model folder or 'generation', got {self.model!r}")
        _device(self.device, "device", allow_none=True)
        _dtype(self.dtype, "dtype", allow_none=True)
        if self.kind == "openai":
            _need(isinstance(self.base_url, str) and self.base_url.startswith(("http://", "https://")), "base_url",
                  "the openai judge needs base_url starting with http:// or https:// (e.g. "
                  f"https://api.openai.com/v1 or http://127.0.0.1:8000/v1), got {self.base_url!r}")
            _need(isinstance(self.model, str) and self.model != "generation", "model",
                  f"the openai judge needs the endpoint's model name, got {self.model!r}")
        _number(self.temperature, "temperature", 0.0)
        _pos_int(self.max_tokens, "max_tokens")
        _pos_int(self.concurrency, "concurrency")
        _need(isinstance(self.max_retries, int) and not isinstance(self.max_retries, bool) and self.max_retries >= 0,
              "max_retries", f"must be an integer >= 0, got {self.max_retries!r}")
        for k in ("backoff_s", "timeout_s"):
            _need(isinstance(getattr(self, k), (int, float)) and not isinstance(getattr(self, k), bool)
                  and getattr(self, k) > 0, k, f"must be a positive number of seconds, got {getattr(self, k)!r}")


@dataclass(frozen=True)
class RunnerSpec:
    """chunk_size: jobs per engine.generate call (and per store transaction); max_batch_size: rows
    per forward inside a call; judge_chunk_size: answers per judge call; cuda_graphs: decode steps
    replay per-batch-size CUDA graphs (CUDA and the triton backend only; each graph is checked
    against the eager step once)."""

    chunk_size: int = 256
    max_batch_size: int = 64
    judge_chunk_size: int = 64
    cuda_graphs: bool = False

    def __post_init__(self):
        for k in ("chunk_size", "max_batch_size", "judge_chunk_size"):
            _pos_int(getattr(self, k), k)


@dataclass(frozen=True)
class RefusalSpec:
    """phrases: protocol:<key> or a list (case-insensitive substrings); compat: the authors' rule
    exactly (phrases as case-insensitive regular expressions, their mojibake "i can’t" entry;
    reproduces their refusal flags; see judge/refusal.py); advbench_extra: add common
    refusals outside the study's list ("I won't", "I must decline", ...) for AdvBench (our choice);
    counts_correct: tasks where a refusal counts as correct (applied by the analysis)."""

    phrases: str | list[str] = "protocol:refusal_phrases_case_insensitive"
    compat: bool = False
    advbench_extra: bool = True
    counts_correct: list[str] = field(default_factory=lambda: ["disinfo"])

    def __post_init__(self):
        _need(isinstance(self.phrases, str) or (isinstance(self.phrases, list) and self.phrases
                                                and all(isinstance(p, str) and p for p in self.phrases)),
              "phrases", f"must be protocol:<key> or a non-empty list of phrases, got {self.phrases!r}")


@dataclass(frozen=True)
class RunConfig:
    name: str
    output_dir: str
    model: ModelSpec
    arms: list[ArmSpec]
    tasks: list[TaskSpec]
    grid: GridSpec = field(default_factory=GridSpec)
    generation: SamplingSpec = field(default_factory=SamplingSpec)
    capability_generation: SamplingSpec = field(default_factory=lambda: SamplingSpec(temperature=0.2))
    prompts: PromptSpec = field(default_factory=PromptSpec)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    refusal: RefusalSpec = field(default_factory=RefusalSpec)
    runner: RunnerSpec = field(default_factory=RunnerSpec)
    export: list[str] = field(default_factory=lambda: ["csv", "parquet"])
    protocol: str | None = None

    def __post_init__(self):
        _need(isinstance(self.name, str) and bool(self.name), "name", f"must be a non-empty string, got {self.name!r}")
        _need(isinstance(self.output_dir, str) and bool(self.output_dir), "output_dir",
              f"must be a folder path, got {self.output_dir!r}")
        _need(len(self.arms) > 0, "arms", "at least one arm is needed")
        names = [a.name for a in self.arms]
        _need(len(set(names)) == len(names), "arms", f"arm names must be unique, got {names}")
        _need(len(self.tasks) > 0, "tasks", "at least one task is needed")
        for t in self.tasks:
            for a in t.arms or []:
                _need(a in names, f"tasks.{t.name}.arms", f"unknown arm {a!r}; arms are {names}")
        _need(all(f in EXPORT_FORMATS for f in self.export), "export",
              f"formats must be among {EXPORT_FORMATS}, got {self.export!r}")
        if self.judge.kind == "logprob" and self.judge.adapter is not None and self.judge.model == "generation":
            adapters = [a.name for a in self.arms if a.kind == "adapter"]
            _need(self.judge.adapter in adapters, "judge.adapter",
                  f"with model: generation the judge adapter must be an adapter arm {adapters}, "
                  f"got {self.judge.adapter!r}")


# ---- YAML -> dataclasses, with key paths in every error -------------------------------------------
def _build(cls, raw: Any, key: str):
    if dataclasses.is_dataclass(cls):
        if not isinstance(raw, dict):
            raise ConfigError(f"{key or 'config'}: must be a mapping, got {type(raw).__name__} {raw!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields), key=str)
        if unknown:
            near = difflib.get_close_matches(str(unknown[0]), list(fields), n=1, cutoff=0.6)
            raise ConfigError(f"{key + '.' if key else ''}{unknown[0]}: unknown key; "
                              + (f"did you mean {near[0]!r}? " if near else "")
                              + f"{cls.__name__} knows {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, f in fields.items():
            sub = f"{key}.{name}" if key else name
            if name not in raw:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ConfigError(f"{sub}: required key is missing")
                continue
            kwargs[name] = _build(hints[name], raw[name], sub)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{key + '.' if key else ''}{err}") from None
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(cls) if a is not type(None)]
        if raw is None:
            return None
        if len(inner) == 1:
            return _build(inner[0], raw, key)
        return raw  # str | list[str] and the like: checked in __post_init__
    if origin is list:
        (item,) = typing.get_args(cls)
        if not isinstance(raw, list):
            raise ConfigError(f"{key}: must be a list, got {raw!r}")
        return [_build(item, v, f"{key}.{v['name']}" if isinstance(v, dict) and "name" in v else f"{key}[{i}]")
                for i, v in enumerate(raw)]
    if cls is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if cls in (str, int, float, bool) and not isinstance(raw, cls):
        raise ConfigError(f"{key}: must be {cls.__name__}, got {type(raw).__name__} {raw!r}")
    return raw


def _named(raw: Any, key: str, what: str) -> list[dict]:
    """`arms:` / `tasks:` are mappings name -> settings; turn them into lists with a name field."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{key}: must be a non-empty mapping of {what} name -> settings, got {raw!r}")
    out = []
    for name, body in raw.items():
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ConfigError(f"{key}.{name}: must be a mapping of settings, got {body!r}")
        if "name" in body:
            raise ConfigError(f"{key}.{name}.name: the {what} name is its key; remove 'name'")
        out.append({"name": str(name), **body})
    return out


def config_from_dict(raw: Any, source: str = "<dict>", base_dir: Path | None = None) -> RunConfig:
    """Validate a parsed config. base_dir: where a `judge: <file>` include is looked up (the config
    file's folder); None = the current directory."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a run config is a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    try:
        for key, what in (("arms", "arm"), ("tasks", "task")):
            if key not in raw:
                raise ConfigError(f"{key}: required key is missing")
            raw[key] = _named(raw[key], key, what)
        judge = raw.get("judge")
        if isinstance(judge, str):  # an include: a judge config file (configs/judges/*.yaml)
            raw["judge"] = _read_yaml((base_dir or Path.cwd()) / judge, "judge")
        return _build(RunConfig, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _read_yaml(path: Path, key: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    return read_yaml(path)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; every error message starts with the file name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: run config not found" + (" (a folder, not a file)" if path.is_dir() else ""))
    raw = read_yaml(path)
    return config_from_dict(raw, str(path), path.parent)


def load_judge_spec(path: str | Path) -> JudgeSpec:
    """A judge config file (configs/judges/*.yaml) on its own; errors name the file and key."""
    try:
        return _build(JudgeSpec, _read_yaml(Path(path), "judge"), "judge")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def resolve_text(value: str, protocol: dict, key: str) -> str:
    """`protocol:<dotted.key>` -> the text in protocol.json; any other string as given."""
    if not value.startswith("protocol:"):
        return value
    node: Any = protocol
    for part in value[len("protocol:"):].split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{key}: {value!r} names no entry of protocol.json (missing {part!r})")
        node = node[part]
    return node
