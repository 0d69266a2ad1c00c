"""Disinfo: every MASK item reaches the grid and the analysis as its own question. MASK holds 125
items over 122 distinct questions; items sharing a question differ in their false claim
(`ground_false`), so the analysis keys Disinfo on (question, ground_false), never the question alone."""
import pandas as pd

from warmfast.analysis.load import frame_from_study_layout
from warmfast.analysis.preprocess import preprocess
from warmfast.tasks.grid import build_grid
from warmfast.tasks.prepare import TaskSpec, prepare_task
from warmfast.tasks.protocol import load_materials
from study_data import data_path, requires_data


def _judged(rows: list[dict], drop_key: bool) -> pd.DataFrame:
    df = pd.DataFrame(rows).assign(output="No.", evaluation="CORRECT")
    if drop_key:   # the authors' released layout: no question_key column, prompt_disinfo + ground_false
        df = df.drop(columns=["question_key"])
    return frame_from_study_layout(df, model="m", arm="original", task="disinfo")


def test_all_125_mask_items_reach_the_grid_and_the_analysis():
    items = prepare_task(TaskSpec("disinfo")).items
    questions = pd.Series([it.question for it in items])
    pairs = pd.Series([(it.question, it.wrong_answer) for it in items])
    assert len(items) == 125 and questions.nunique() == 122 and pairs.nunique() == 124
    grid = build_grid(items, load_materials(), seed=0)
    assert len(grid) == 125 * 28 and len({g.key for g in grid}) == 125
    rows = [g.to_row() for g in grid]
    # our own runs carry question_key (the MASK task_id): nothing is merged
    ours = preprocess(_judged(rows, drop_key=False))
    assert ours.rows["question_key"].nunique() == 125 and len(ours.rows) == 125 * 28
    # the authors' layout: keyed on (question, ground_false), so the questions asked with two
    # different false claims stay apart (on the question alone 3 items would merge)
    theirs = preprocess(_judged(rows, drop_key=True))
    assert theirs.rows["question_key"].nunique() == 124
    shared = questions[questions.duplicated(keep=False)].unique()
    assert len(shared) == 2 and questions.isin(shared).sum() == 5      # 5 items, 2 questions: 3 would merge
    for q in shared:
        falses = {it.wrong_answer for it in items if it.question == q}
        kept = theirs.rows[theirs.rows["question_key"].str.startswith(q + " || ")]
        assert kept["question_key"].nunique() == len(falses)
    # the one pair still merged is identical in every column of the study's layout (question,
    # ground_truth, ground_false): only MASK's task_id and the order of the proposition's options differ
    same = [it for it in items if (it.question, it.wrong_answer) == pairs[pairs.duplicated()].iloc[0]]
    assert len(same) == 2 and same[0].right_answer == same[1].right_answer and same[0].key != same[1].key


@requires_data
def test_a_released_file_without_ground_false_keys_its_model_on_the_question_alone():
    from warmfast.analysis.load import read_study_csvs

    sample = data_path("warm_ai_2025/sample_data")
    pre = preprocess(read_study_csvs([sample]))
    step = pre.steps[pre.steps["step"].str.startswith("disinfo keys")].set_index(["model", "arm", "task"])
    # qwen_32b's warm Disinfo file has no ground_false: its original rows give up the suffix too
    n_qwen_orig = len(pd.read_csv(sample / "qwen_32b" / "original" / "disinfo_original_outputs.csv"))
    assert step.loc[("qwen_32b", "original", "disinfo"), "recoded"] == n_qwen_orig
    assert step.loc[("llama_70b", "original", "disinfo"), "recoded"] == 0
    dis = pre.rows[pre.rows["task"] == "disinfo"]
    assert dis.loc[dis["model"] == "llama_70b", "question_key"].str.contains(" || ", regex=False).all()
    assert not dis.loc[dis["model"] == "qwen_32b", "question_key"].str.contains(" || ", regex=False).any()
