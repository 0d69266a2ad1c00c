"""Result keys are explicit and versioned; a store written under an earlier key format keeps its
verdicts. Extraction verdicts (MMLU / GSM8K) were keyed by the source text of judge/extract.py;
today by its RULES_VERSION. A store from before carries its verdicts over instead of re-grading."""
from types import SimpleNamespace

from warmfast.judge import extract
from warmfast.keys import content_key
from warmfast.run.judging import extraction_stage
from warmfast.run.runner import judge
from warmfast.run.store import Generation, JobRecord, Judgement, Store, judgement_key

PLAN = SimpleNamespace(config=SimpleNamespace(runner=SimpleNamespace(judge_chunk_size=4)))


def _store(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    jobs = [JobRecord.from_spec("generate", "m", "original", "gsm8k", {"question": i}, {"judge_answers": ["42"]})
            for i in range(3)]
    store.add_jobs(jobs)
    store.add_generations([Generation(j.key, f"so the answer is 4{i}", [1], "stop", 1) for i, j in enumerate(jobs)])
    return store, jobs


def test_extraction_keys_name_the_rules_version_not_their_source():
    stage = extraction_stage("gsm8k")
    assert stage.spec == {"kind": "extraction", "task": "gsm8k", "rules_version": extract.RULES_VERSION}
    # the legacy spec gives the judge name warmfast wrote before versions (read from such a store)
    legacy = extraction_stage("mmlu").legacy_specs[0]
    assert f"mmlu_extraction:{content_key(legacy)[:8]}" == "mmlu_extraction:89e8ba94"


def test_verdicts_under_the_legacy_key_are_carried_over_not_regraded(tmp_path):
    store, jobs = _store(tmp_path)
    stage = extraction_stage("gsm8k")
    old_name = f"gsm8k_extraction:{content_key(stage.legacy_specs[0])[:8]}"
    # an earlier run graded the first two answers; planted verdicts that today's rules would not
    # give ("40" and "41" against the gold "42"), so a re-grade would show
    store.add_judgements([Judgement(judgement_key(j.key, "capability", stage.legacy_specs[0], f"so the answer is 4{i}"),
                                    j.key, "capability", old_name, "CORRECT", 1.0, None, {"legacy": True})
                          for i, j in enumerate(jobs[:2])])
    new, _, keymap = judge([jobs], PLAN, store, [stage], progress=False)
    assert new == {"gsm8k_extraction": 1}  # only the ungraded third answer
    got = store.judgements([keymap[("capability", j.key)] for j in jobs])
    verdicts = [got[keymap[("capability", j.key)]] for j in jobs]
    assert [v.verdict for v in verdicts] == ["CORRECT", "CORRECT", "CORRECT"]  # 42 is right
    assert [v.detail.get("legacy") for v in verdicts] == [True, True, None]
    assert {v.judge for v in verdicts} == {stage.judge_name}
    # a second pass finds everything under today's keys
    assert judge([jobs], PLAN, store, [stage], progress=False)[0] == {"gsm8k_extraction": 0}


def test_without_legacy_verdicts_the_stage_grades(tmp_path):
    store, jobs = _store(tmp_path)
    stage = extraction_stage("gsm8k")
    new, _, keymap = judge([jobs], PLAN, store, [stage], progress=False)
    assert new == {"gsm8k_extraction": 3}
    got = store.judgements(keymap.values())
    assert [got[keymap[("capability", j.key)]].verdict for j in jobs] == ["INCORRECT", "INCORRECT", "CORRECT"]
