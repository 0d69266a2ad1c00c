"""Judge labelled outputs and score the judge: `warmfast judge --labelled DIR --judge FILE.yaml`.

DIR holds outputs in the study's layout (`<model>/<arm>/<task>_<arm>_outputs.csv`, e.g.
../shared/data/warm_ai_2025/sample_data with the authors' GPT-4o labels in `evaluation`). Each row
is rebuilt into (question, reference answer, output), graded by the configured judge (log-prob on
a local model, or an OpenAI-compatible endpoint), and the verdicts are compared with the labels:
accuracy, Cohen's kappa and the confusion table, overall and per task. Rows that lack the columns
a judge needs (some released files keep only the key and the output) are counted and reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from warmfast.engine.api import Engine
from warmfast.judge.agreement import agreement_by, read_study_outputs
from warmfast.judge.prompts import JudgeItem
from warmfast.run.config import ConfigError, JudgeSpec
from warmfast.run.judging import LLMJudge
from warmfast.run.plan import adapter_fingerprint, model_fingerprint
from warmfast.run.store import Store
from warmfast.tasks.item import TaskDataError
from warmfast.tasks.protocol import load_protocol_json
from warmfast.tasks.study_rows import item_from_study_row


@dataclass
class LabelledResult:
    judged: int
    skipped: dict[str, int]
    agreement: dict  # group ("all" or task) -> warmfast.judge.agreement.Agreement
    files: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"judged {self.judged} labelled outputs"]
        out += [f"skipped {n}: {why}" for why, n in self.skipped.items()]
        for group, ag in self.agreement.items():
            out.append(f"[{group}] n={ag.n} accuracy={ag.accuracy:.3f} kappa={ag.kappa:.3f}"
                       + (f" ({ag.dropped} replies named no verdict)" if ag.dropped else ""))
        out.append(self.agreement["all"].table())
        out += [f"wrote {p}" for p in self.files]
        return out


def _engine_loader(j: JudgeSpec):
    if j.kind != "logprob":
        return (lambda: None), ""

    model_dir = Path(j.model)
    if j.model == "generation" or not (model_dir / "config.json").is_file():
        raise ConfigError(f"judge.model: judging labelled outputs needs a model folder with config.json, "
                          f"got {j.model!r}")
    ident = f"{model_dir.name}@{model_fingerprint(model_dir)}"
    if j.adapter:
        ident += f"+{adapter_fingerprint(Path(j.adapter), 'judge.adapter')}"

    def load():
        return Engine.from_pretrained(model_dir, adapters={"judge": j.adapter} if j.adapter else {},
                                      device=j.device or "cpu", dtype=j.dtype or "float32")

    return load, ident


def judge_labelled(root: str | Path, judge: JudgeSpec, out_dir: str | Path, per_task: int | None = None,
                   progress: bool = True) -> LabelledResult:
    """Grade every labelled output under `root` (at most `per_task` rows per task, in file order)."""
    out_dir = Path(out_dir)
    df = read_study_outputs(root)
    if per_task is not None:
        df = df.groupby("task", sort=False).head(per_task).reset_index(drop=True)
    items, keep, skipped = [], [], {}
    for i, row in df.iterrows():
        why = None
        if row["evaluation"] not in ("CORRECT", "INCORRECT"):
            why = "no CORRECT/INCORRECT label"
        elif not isinstance(row["output"], str):
            why = "empty output"
        else:
            try:
                item = item_from_study_row(row["task"], row.to_dict())
            except TaskDataError as err:
                why = f"row lacks the question or reference columns ({str(err).split(' (columns')[0]})"
            else:
                if not item.correct_answers:
                    why = "no reference answer"
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        refs = list(item.correct_answers)
        items.append(JudgeItem(item.question, row["output"], refs[0] if judge.answers == "first" else " / ".join(refs)))
        keep.append(i)
    if not items:
        raise ValueError(f"{root}: no labelled row carries what the judge needs; skipped: {skipped}")
    loader, ident = _engine_loader(judge)
    llm = LLMJudge(judge, load_protocol_json(), 32, loader, ident, "judge" if judge.adapter else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Store(out_dir / "store.sqlite") as store:  # the OpenAI judge's reply cache
        verdicts = llm(items, store, progress=progress)
    judged = df.loc[keep].copy()
    judged["judge_verdict"] = [v.verdict for v in verdicts]
    judged["judge_confidence"] = [v.confidence for v in verdicts]
    ag = agreement_by(judged["evaluation"].tolist(), judged["judge_verdict"].tolist(), judged["task"].tolist(),
                      labels=["CORRECT", "INCORRECT"], drop_missing=True)  # dropped: no verdict named
    csv_path, json_path = out_dir / "judged_labelled.csv", out_dir / "agreement.json"
    judged.to_csv(csv_path, index=False)
    json_path.write_text(json.dumps({"judge": llm.spec, "skipped": skipped,
                                     "agreement": {str(g): a.to_dict() for g, a in ag.items()}}, indent=1, default=str))
    return LabelledResult(len(items), skipped, ag, [csv_path, json_path])
