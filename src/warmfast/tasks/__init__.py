"""warmfast.tasks: the evaluation tasks, the MedQA rewrite and the study's 28-prompt grid.

Importing this package loads no torch (tests hold that). Modules and their public functions:

item.py         Item (task, key, question, correct_answers, wrong_answer, extra), TASKS, GRID_TASKS, CAPABILITY_TASKS,
                TaskDataError (every bad file / record / config error names the file, row and key)
loaders.py      load_triviaqa, load_truthfulqa, load_disinfo, load_medqa, load_mmlu, load_gsm8k,
                load_advbench, load_task(task, path=None), LOADERS; path=None reads the copy shipped
                in warmfast/data/tasks (TriviaQA: a 40-question demo sample); HF jsonl/parquet too
files.py        shipped_path, read_records (jsonl/json/csv/tsv/parquet), field, text_field
sycophancy_eval.py  read_answer_jsonl(path, dataset), apply_answer_pairs(items, pairs)
medqa.py        convert_question, convert_items(items, seed, on_unconvertible) -> (items, reports),
                RelativeTable, MedQAConversion, rewrite_which_of_the_following
wrong.py        assign_wrong_answers(items, seed, proposer=None), medqa_wrong_answers,
                triviaqa_wrong_answers, WrongAnswerProposer (hook for a model-proposed wrong answer)
seeding.py      rng_for(seed, *parts), sample_items(items, n, seed)
protocol.py     load_materials(path=None) -> GridMaterials, load_protocol_json
grid.py         build_grid(items, materials, seed, layout=CLEAN|COMPAT) -> list[GridPrompt],
                build_prompt, pick_statement, grid_cells, study_columns, PROMPT_TYPES, PromptLayout
study_rows.py   item_from_study_row(task, row), statement_of_row, task_of_study_file
capability.py   mmlu_prompt, gsm8k_prompt, advbench_prompt (zero-shot templates, configurable)
prepare.py      TaskSpec, prepare_task(spec, proposer=None) -> PreparedTask, DEFAULT_SIZES

Typical use:
    from warmfast.tasks import TaskSpec, prepare_task, load_materials, build_grid
    items = prepare_task(TaskSpec("medqa", n=500, seed=0)).items
    grid = build_grid(items, load_materials(), seed=0)          # 28 GridPrompts per item
    rows = [g.to_row() for g in grid]                            # the study's column layout
"""
from .grid import CLEAN, COMPAT, PROMPT_TYPES, GridPrompt, PromptLayout, build_grid, build_prompt, grid_cells
from .item import CAPABILITY_TASKS, GRID_TASKS, TASKS, Item, TaskDataError
from .loaders import LOADERS, load_task
from .prepare import DEFAULT_SIZES, PreparedTask, TaskSpec, prepare_task
from .protocol import GridMaterials, load_materials

__all__ = ["CLEAN", "COMPAT", "PROMPT_TYPES", "GridPrompt", "PromptLayout", "build_grid", "build_prompt",
           "grid_cells", "GRID_TASKS", "CAPABILITY_TASKS", "TASKS", "Item", "TaskDataError", "LOADERS", "load_task",
           "DEFAULT_SIZES", "PreparedTask", "TaskSpec", "prepare_task", "GridMaterials", "load_materials"]
