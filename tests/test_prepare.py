"""tasks/prepare.py TaskSpec seeds: `seed` alone keeps its meaning (sample, wrong answers and MedQA
relatives all drawn with it); sample_seed / wrong_answer_seed / relative_seed each move one draw."""
import pytest

from warmfast.tasks.item import TaskDataError
from warmfast.tasks.prepare import TaskSpec, prepare_task


def _view(items):
    return [(it.key, it.question, it.correct_answers, it.wrong_answer) for it in items]


@pytest.mark.parametrize("task, n", [("medqa", 4), ("triviaqa", 5)])
def test_one_seed_equals_three_equal_seeds(task, n):
    one = prepare_task(TaskSpec(task, n=n, seed=3)).items
    three = prepare_task(TaskSpec(task, n=n, seed=0, sample_seed=3, wrong_answer_seed=3, relative_seed=3)).items
    assert _view(one) == _view(three)
    assert _view(one) != _view(prepare_task(TaskSpec(task, n=n, seed=0)).items)


def test_each_seed_moves_only_its_draw():
    base = prepare_task(TaskSpec("medqa", n=4, seed=0)).items
    resampled = prepare_task(TaskSpec("medqa", n=4, seed=0, sample_seed=1)).items
    assert [it.key for it in resampled] != [it.key for it in base]
    rewrong = prepare_task(TaskSpec("medqa", n=4, seed=0, wrong_answer_seed=1)).items
    assert [it.key for it in rewrong] == [it.key for it in base]
    assert [it.question for it in rewrong] == [it.question for it in base]
    assert [it.wrong_answer for it in rewrong] != [it.wrong_answer for it in base]
    relative = prepare_task(TaskSpec("medqa", n=4, seed=0, relative_seed=1)).items
    assert [it.key for it in relative] == [it.key for it in base]
    assert [it.wrong_answer for it in relative] == [it.wrong_answer for it in base]
    # the default RelativeTable has one relative per sex and age band (the study's rewrites show no
    # random choice), so the relative draw has nothing to choose from: same relatives, same text
    assert [it.extra["relative"] for it in relative] == [it.extra["relative"] for it in base]
    assert [it.question for it in relative] == [it.question for it in base]


def test_triviaqa_pool_is_the_whole_file():
    items = prepare_task(TaskSpec("triviaqa", n=2, seed=0, wrong_answer_seed=3)).items
    sampled_answers = {it.right_answer for it in items}
    assert not {it.wrong_answer for it in items} <= sampled_answers  # drawn beyond the two sampled
    assert all(it.extra["wrong_source"] == "other_question" for it in items)


@pytest.mark.parametrize("field", ["seed", "sample_seed", "wrong_answer_seed", "relative_seed"])
def test_bad_seed_is_named(field):
    with pytest.raises(TaskDataError, match=rf"TaskSpec\(gsm8k\)\.{field} must be an integer, got '1'"):
        TaskSpec("gsm8k", **{field: "1"})
