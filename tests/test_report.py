"""`warmfast report` on the authors' real sample outputs: files written, run tables beside the
published values (read back here with the csv module), the what-could-not-be-computed section for
missing arms / a single model / empty cells, and the run-store reader on a real SQLite store."""
import csv
import re

import pandas as pd
import pytest

from warmfast.analysis.load import read_study_csvs
from warmfast.analysis.report import analyse
from warmfast.analysis.store_reader import read_store
from warmfast.cli import main
from study_data import data_path, requires_data

pytestmark = requires_data

SHARED = data_path("warm_ai_2025")
SAMPLE = SHARED / "sample_data"
PUBLISHED_SRC = SHARED / "summary_data"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    assert SAMPLE.exists(), f"{SAMPLE} missing: these tests need the authors' released data"
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(SAMPLE), "--out", str(out)]) == 0
    return out


def test_report_files_and_embedded_figures(full_report):
    html = (full_report / "report.html").read_text()
    md = (full_report / "summary.md").read_text()
    pngs = sorted((full_report / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == {"error_by_task_this_run", "error_by_task_published", "diff_by_context_this_run",
                                      "diff_by_context_published", "arms_published", "benchmarks_published"}
    for p in pngs:
        assert p.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every figure is inlined (no external file, no network)
    assert len(re.findall(r'<img class="fig" src="data:image/png;base64,', html)) == len(pngs)
    assert not re.search(r'src="(?!data:)', html)
    for name in ("preprocessing_steps", "paired_tests", "marginal_effects", "run_vs_published", "missing_cells"):
        assert (full_report / "tables" / f"{name}.csv").is_file()
    assert "## What could not be computed, and why" in md


def test_run_cells_sit_beside_published_values(full_report):
    sbs = pd.read_csv(full_report / "tables" / "run_vs_published.csv")
    with open(PUBLISHED_SRC / "results_warm_ft.csv", newline="", encoding="utf-8") as fh:
        pub = {(r["Model"], r["Dataset"], r["Test_Type"], r["Amendment_type"].split()[0]): r for r in csv.DictReader(fh)}
    row = sbs[(sbs["model"] == "llama_70b") & (sbs["task"] == "trivia") & (sbs["belief"] == "absent")
              & (sbs["context"] == "unmodified")].iloc[0]
    p = pub[("llama-70b", "trivia", "Normal", "unmodified")]
    assert row["acc_original (published)"] == float(p["Original Accuracy (%)"])
    assert row["acc_treated (published)"] == float(p["Fine-tuned Accuracy (%)"])
    assert row["p_fdr (published)"] == float(p["p-value (FDR corrected)"])
    # beside the published value: the plain prompt only (the published tables did not pool the
    # neutral prompts): 1 pair, lost by warm
    assert (row["n"], row["acc_original"], row["acc_treated"]) == (1, 100.0, 0.0)
    # the report's own (default) settings in a labelled column: plain + neutral prompt, 2 pairs
    ours = "[clean refusals, neutral pooled]"
    assert (row[f"n {ours}"], row[f"acc_original {ours}"], row[f"acc_treated {ours}"]) == (2, 100.0, 50.0)
    # every run cell computed the published way found its published cell (cells that exist only
    # under the report's own settings carry no published value)
    assert sbs.loc[sbs["n"].notna(), "acc_original (published)"].notna().all()
    html = (full_report / "report.html").read_text()
    for r in list(pub.values())[:20]:                       # the published tables are rendered
        assert f"<td>{float(r['Original Accuracy (%)']):.2f}</td>" in html


def test_cannot_section_names_missing_arms_separation_and_empty_cells(full_report):
    md = (full_report / "summary.md").read_text()
    cannot = md.split("## What could not be computed, and why")[1]
    assert "arm cold: no rows of this arm" in cannot and "arm warm_sysprompt: no rows" in cannot
    assert "M1 (warm vs original), separated terms withheld: separation: dataset=disinfo: every answer correct" in cannot
    assert "no discordant pairs" in cannot and "no rows in either arm" in cannot
    assert "warmth over epochs" in cannot and "capability benchmarks" in cannot
    assert "single model" not in cannot


def test_single_model_with_sociot_and_benchmarks(tmp_path, capsys):
    # small hand-written tables in the documented columns (not study data): the figures must draw them
    sociot = tmp_path / "sociot.csv"
    sociot.write_text("model,epoch,warmth,se\nm,0,0.011,0.001\nm,1,0.02,0.001\nm,2,0.028,0.001\n")
    bench = tmp_path / "bench.csv"
    bench.write_text("model,benchmark,arm,accuracy,ci_lower,ci_upper\nm,MMLU,original,60,58,62\nm,MMLU,warm,55,53,57\n")
    out = tmp_path / "one"
    assert main(["report", str(SAMPLE / "qwen_32b"), "--out", str(out), "--sociot", str(sociot),
                 "--benchmarks", str(bench)]) == 0
    md = (out / "summary.md").read_text()
    assert "single model (qwen_32b)" in md
    assert "model fixed effect omitted" in md
    assert "warmth over epochs" not in md.split("could not be computed")[1]
    assert (out / "figures" / "warmth_epochs_this_run.png").is_file()
    assert (out / "figures" / "benchmarks_this_run.svg").is_file()
    assert main(["report", str(SAMPLE), "--out", str(out), "--sociot", str(tmp_path / "nope.csv")]) == 2
    assert re.search("warmfast report: --sociot file .*nope.csv does not exist", capsys.readouterr().err)


def test_original_arm_only(tmp_path):
    only = tmp_path / "orig"
    assert main(["report", str(SAMPLE / "llama_70b" / "original"), "--out", str(only)]) == 0
    md = (only / "summary.md").read_text()
    assert "arm warm: no rows of this arm" in md
    html = (only / "report.html").read_text()
    assert "No paired cells in this run." in html
    assert "Not drawn: the run has no paired cells" in html


def test_run_store_reader_matches_csv_reader(tmp_path):
    """A real run store holding sample rows (study columns in meta, as run/plan.py writes them)."""
    from warmfast.run.store import Generation, JobRecord, Judgement, Store, judgement_key

    files = [SAMPLE / "llama_70b" / arm / f"{t}_{arm}_outputs.csv" for arm in ("original", "warm")
             for t in ("trivia", "medqa")]
    expected = read_study_csvs(files)
    jobs, gens, judgements = [], [], []
    for f in files:
        arm, task = f.parent.name, f.name.split("_")[0]
        for i, row in pd.read_csv(f).iterrows():
            meta = {k: (None if pd.isna(v) else v) for k, v in row.items()
                    if k not in ("output", "evaluation", "refusal", "id", "confidence", "is_correct")}
            meta.update(task="triviaqa" if task == "trivia" else task, sample=0)
            job = JobRecord.from_spec("generate", "llama_70b", arm, meta["task"], {"f": f.name, "i": i}, meta)
            jobs.append(job)
            gens.append(Generation(job.key, row["output"], [1, 2], "stop", 2))
            jk = judgement_key(job.key, "evaluation", {"judge": "gpt-4o"}, row["output"])
            judgements.append(Judgement(jk, job.key, "evaluation", "gpt-4o", row["evaluation"],
                                        float(row["evaluation"] == "CORRECT"), None, {}))
    unjudged = JobRecord.from_spec("generate", "llama_70b", "warm", "medqa", {"x": 1}, dict(jobs[-1].meta))
    with Store(tmp_path / "store.sqlite") as store:
        store.add_jobs(jobs + [unjudged])
        store.add_generations(gens + [Generation(unjudged.key, "text", [1], "stop", 1)])
        store.add_judgements(judgements)
    export = read_store(tmp_path / "store.sqlite")
    key = ["arm", "task", "question_key", "context", "prompt_type"]
    got = export.judged.sort_values(key).reset_index(drop=True)
    want = expected.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert export.notes == [(f"1 store row(s) of {tmp_path / 'store.sqlite'}",
                             "left out: generations without an evaluation judgement (judging not finished)")]
    # the CLI takes the run directory; the note reaches the report
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert "without an evaluation judgement" in (tmp_path / "rep" / "summary.md").read_text()
    a = analyse(export.judged)
    assert len(a.paired) > 0


def test_no_rows_is_a_clear_error(tmp_path):
    f = tmp_path / "m" / "warm" / "trivia_warm_outputs.csv"
    f.parent.mkdir(parents=True)
    f.write_text("content_key,prompt_template,amendment_type,output,evaluation\n")
    with pytest.raises(ValueError, match="no judged rows"):
        analyse(read_study_csvs([f]))


def test_response_lengths_in_report(full_report):
    lengths = pd.read_csv(full_report / "tables" / "response_length.csv").set_index("arm")
    rows = read_study_csvs([SAMPLE])
    # independent: mean output length of the rows the authors' rule keeps (the published way: their
    # phrases as case-insensitive regular expressions; the 3 refusals it finds are not Disinfo)
    import json
    phrases = json.loads(data_path("protocol/protocol.json").read_text())["refusal_phrases_case_insensitive"]
    authors = "|".join("i can\u201a\u00e4\u00f4t" if p == "i can\u2019t" else p for p in phrases)
    refused = rows["output"].str.contains(authors, case=False, regex=True)
    assert refused.sum() == 3 and not (refused & (rows["task"] == "disinfo")).any()
    kept = rows[~refused]
    for arm in ("original", "warm"):
        assert lengths.loc[arm, "mean_chars"] == pytest.approx(kept.loc[kept["arm"] == arm, "output"].str.len().mean())
    assert lengths.loc["warm", "published_mean_chars"] == 734 and lengths.loc["original", "published_mean_chars"] == 877
