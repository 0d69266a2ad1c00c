"""The report's store reader counts only the current plan's jobs: a run folder whose store also
holds an earlier plan's jobs (a changed setting, same output_dir) reports those apart, neither
analysed nor called unjudged. Real plans (tiny model), a real SQLite store, verdicts written as
the runner writes them."""
import json

import pytest

from warmfast.analysis.store_reader import read_store
from warmfast.run.config import config_from_dict
from warmfast.run.plan import PLAN_MANIFEST, build_plan, plan_job_keys, read_plan_manifest
from warmfast.run.store import Generation, Judgement, Store, judgement_key


def _config(out_dir, temperature):
    return config_from_dict({
        "name": "t", "output_dir": str(out_dir),
        "model": {"name": "tiny", "tiny": {"arch": "llama", "n_adapters": 1, "max_position_embeddings": 2048}},
        "arms": {"original": {"kind": "original"}}, "tasks": {"disinfo": {"n": 1}},
        "generation": {"temperature": temperature}, "judge": {"kind": "none"}})


def _fill(store, jobs, judged):
    """A generation for every job; an evaluation verdict for the first `judged` of them."""
    store.add_jobs(jobs)
    store.add_generations(Generation(j.key, f"answer {i}", [1], "stop", 1) for i, j in enumerate(jobs))
    store.add_judgements(Judgement(judgement_key(j.key, "evaluation", {"judge": "lp"}, f"answer {i}"), j.key,
                                   "evaluation", "logprob_judge", "CORRECT" if i % 2 else "INCORRECT",
                                   float(i % 2), 0.9, {}) for i, j in enumerate(jobs[:judged]))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Plan A (temperature 0.8) fully generated and judged; then plan B (0.9) in the same folder:
    20 judged, 4 generated but unjudged, 2 in the store without a generation, 2 not stored yet."""
    out = tmp_path_factory.mktemp("run")
    a = build_plan(_config(out, 0.8))
    b = build_plan(_config(out, 0.9))  # the current plan: plan.json now lists B's keys
    assert len(a.jobs) == len(b.jobs) == 28 and not {j.key for j in a.jobs} & {j.key for j in b.jobs}
    with Store(out / "store.sqlite") as store:
        _fill(store, a.jobs, judged=28)
        _fill(store, b.jobs[:24], judged=20)
        store.add_jobs(b.jobs[24:26])
    return out, a, b


def test_only_the_current_plan_is_reported(run_dir):
    out, a, b = run_dir
    path = out / "store.sqlite"
    export = read_store(path)
    assert len(export.judged) == 20
    assert set(export.judged["output"]) == {f"answer {i}" for i in range(20)}
    assert export.notes == [
        (f"4 store row(s) of {path}", "left out: grid jobs without a generation yet (run not finished)"),
        (f"4 store row(s) of {path}", "left out: generations without an evaluation judgement (judging not finished)"),
        (f"28 store row(s) of {path}", "left out: jobs of earlier plans of this run folder, not in the current "
                                       f"plan ({out / PLAN_MANIFEST})")]


def test_an_explicit_plan_picks_its_jobs(run_dir):
    out, a, b = run_dir
    export = read_store(out / "store.sqlite", plan_jobs=plan_job_keys(a))
    assert len(export.judged) == 28
    assert export.notes == [(f"26 store row(s) of {out / 'store.sqlite'}", "left out: jobs of earlier plans of "
                                                                           "this run folder, not in the current "
                                                                           "plan (the given plan)")]


def test_a_folder_without_plan_json_is_read_whole(run_dir, tmp_path):
    out, a, b = run_dir
    (tmp_path / "store.sqlite").write_bytes((out / "store.sqlite").read_bytes())
    export = read_store(tmp_path / "store.sqlite")
    assert len(export.judged) == 48  # both plans' judged rows: nothing tells them apart
    assert [n for n, _ in export.notes] == [f"2 store row(s) of {tmp_path / 'store.sqlite'}",
                                            f"4 store row(s) of {tmp_path / 'store.sqlite'}"]


def test_plan_manifest_round_trip_and_bad_file(run_dir, tmp_path):
    out, a, b = run_dir
    assert read_plan_manifest(out) == plan_job_keys(b)
    assert read_plan_manifest(tmp_path) is None
    (tmp_path / PLAN_MANIFEST).write_text(json.dumps({"jobs": [1, 2]}))
    with pytest.raises(ValueError, match=rf"{PLAN_MANIFEST}: not a warmfast plan manifest"):
        read_plan_manifest(tmp_path)
    (tmp_path / PLAN_MANIFEST).write_text("{")
    with pytest.raises(ValueError, match=rf"{PLAN_MANIFEST}: not valid JSON"):
        read_plan_manifest(tmp_path)
    # a rebuilt plan rewrites the manifest whole; no temporary file is left behind
    build_plan(a.config)
    assert read_plan_manifest(out) == plan_job_keys(a)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    build_plan(b.config)
