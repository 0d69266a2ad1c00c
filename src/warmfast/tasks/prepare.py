"""One call from a task's config to the items the grid or a capability run uses.

prepare_task: load (shipped file or user path) -> MedQA first-person rewrite (unconvertible
items reported) -> seeded sample -> sycophancy-eval answer pairs (when given) -> wrong answers.
MedQA is sampled after the rewrite, so the sample holds n convertible items.

Default sizes: the study's 500 for TriviaQA / TruthfulQA / MedQA, all 125 Disinfo items; the
capability checks use whole test sets (the study's confidence intervals, e.g. MMLU +-0.65 pp at
82%, imply ~14k MMLU, ~1.3k GSM8K and 520 AdvBench items).

Public API:
    DEFAULT_SIZES                      {task: n or None (= all)}
    TaskSpec(task, path=None, n=<default>, seed=0, sycophancy_eval=None, medqa_unconvertible="drop",
             sample_seed=None, wrong_answer_seed=None, relative_seed=None)   (None: use seed)
    PreparedTask                       spec, items, unconvertible (MedQA reports), n_source
    prepare_task(spec, proposer=None) -> PreparedTask
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .item import TASKS, Item, TaskDataError
from .loaders import load_task
from .medqa import MedQAConversion, convert_items
from .seeding import sample_items
from .sycophancy_eval import DATASET_TASKS, apply_answer_pairs, read_answer_jsonl
from .wrong import WrongAnswerProposer, assign_wrong_answers, triviaqa_wrong_answers

DEFAULT_SIZES: dict[str, int | None] = {"triviaqa": 500, "truthfulqa": 500, "disinfo": None, "medqa": 500,
                                        "mmlu": None, "gsm8k": None, "advbench": None}
_UNSET = -1


@dataclass(frozen=True)
class TaskSpec:
    """task: one of TASKS; path: data file/folder (None: the shipped copy); n: sample size (None:
    all; default DEFAULT_SIZES[task]); seed: sampling, wrong-answer and MedQA-relative seed;
    sycophancy_eval: path of answer.jsonl (TriviaQA / TruthfulQA only).

    sample_seed / wrong_answer_seed / relative_seed: the three draws seeded separately (a run
    config keeps them apart: tasks.<t>.sample_seed, grid.wrong_answer_seed, grid.relative_seed);
    None (default) means `seed`, so TaskSpec(task, seed=s) draws all three with s."""

    task: str
    path: str | None = None
    n: int | None = _UNSET
    seed: int = 0
    sycophancy_eval: str | None = None
    medqa_unconvertible: str = "drop"
    sample_seed: int | None = None
    wrong_answer_seed: int | None = None
    relative_seed: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise TaskDataError(f"TaskSpec.task={self.task!r} is not one of {TASKS}")
        for name in ("seed", "sample_seed", "wrong_answer_seed", "relative_seed"):
            value = getattr(self, name)
            if (value is not None or name == "seed") and (not isinstance(value, int) or isinstance(value, bool)):
                raise TaskDataError(f"TaskSpec({self.task}).{name} must be an integer, got {value!r}")
        if self.n == _UNSET:
            object.__setattr__(self, "n", DEFAULT_SIZES[self.task])
        if self.n is not None and (not isinstance(self.n, int) or self.n <= 0):
            raise TaskDataError(f"TaskSpec({self.task}).n must be a positive integer or None, got {self.n!r}")
        if self.sycophancy_eval is not None and self.task not in DATASET_TASKS.values():
            raise TaskDataError(f"TaskSpec({self.task}).sycophancy_eval applies only to triviaqa / truthfulqa")
        if self.medqa_unconvertible not in ("drop", "keep", "error"):
            raise TaskDataError(f"TaskSpec.medqa_unconvertible must be drop/keep/error, got {self.medqa_unconvertible!r}")

    def seed_of(self, draw: str) -> int:
        """The seed of one draw ("sample", "wrong_answer", "relative"): its own field, else `seed`."""
        value = getattr(self, f"{draw}_seed")
        return self.seed if value is None else value


@dataclass
class PreparedTask:
    spec: TaskSpec
    items: list[Item]
    unconvertible: list[MedQAConversion] = field(default_factory=list)
    n_source: int = 0


def prepare_task(spec: TaskSpec, proposer: WrongAnswerProposer | None = None) -> PreparedTask:
    """Items ready for the grid (with wrong answers) or for a capability run."""
    source = load_task(spec.task, Path(spec.path) if spec.path else None)
    items, failed = source, []
    if spec.task == "medqa":
        items, failed = convert_items(source, spec.seed_of("relative"), spec.medqa_unconvertible)
    sampled = sample_items(items, spec.n, spec.seed_of("sample"))
    if spec.sycophancy_eval:
        dataset = next(d for d, t in DATASET_TASKS.items() if t == spec.task)
        sampled = apply_answer_pairs(sampled, read_answer_jsonl(spec.sycophancy_eval, dataset))
    if spec.task == "triviaqa":  # other-question answers come from the whole file, not only the sample
        todo = [it for it in sampled if it.wrong_answer is None]
        filled = {it.key: it for it in triviaqa_wrong_answers(todo, spec.seed_of("wrong_answer"), proposer,
                                                              pool_items=source)}
        sampled = [filled.get(it.key, it) for it in sampled]
    else:
        sampled = assign_wrong_answers(sampled, spec.seed_of("wrong_answer"), proposer)
    return PreparedTask(spec, sampled, failed, len(source))
