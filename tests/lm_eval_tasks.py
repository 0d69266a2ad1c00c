"""Offline lm-eval tasks from local JSONL for the integration tests: a multiple-choice task
(loglikelihood), a perplexity task (loglikelihood_rolling) and a short generate_until task.

Each holds an item longer than the test's max_length, so left truncation (scoring and generation)
and several rolling windows (the first of max_length + 1 tokens) are exercised.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from warmfast.model.tiny import _WORDS

TASKS = ("wf_mc", "wf_ppl", "wf_gen")


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _yaml(name: str, data: Path, body: str) -> str:
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            f"test_split: test\n{body}")


def write_tasks(out: Path, seed: int = 0, n_mc: int = 8, n_text: int = 4, n_gen: int = 6) -> Path:
    """Write the three tasks' JSONL and YAML files into `out`; returns `out` (for --include_path)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    mc = [{"question": _words(rng, 3, 8), "choices": [_words(rng, 1, 3) for _ in range(4)],
           "answer": rng.randrange(4)} for _ in range(n_mc)]
    mc[0]["question"] = _words(rng, 60, 70)  # longer than max_length: left-truncated
    text = [{"text": _words(rng, 10, 90).capitalize() + "."} for _ in range(n_text)]
    text[0]["text"] = _words(rng, 120, 140)  # several rolling windows
    gen = [{"question": _words(rng, 3, 8), "answer": _words(rng, 1, 2)} for _ in range(n_gen)]
    gen[0]["question"] = _words(rng, 50, 60)  # prompt left-truncated to max_length - max_gen_toks
    for name, rows in (("mc", mc), ("text", text), ("gen", gen)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "wf_mc.yaml").write_text(_yaml("wf_mc", out / "mc.jsonl", (
        "output_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n")))
    (out / "wf_ppl.yaml").write_text(_yaml("wf_ppl", out / "text.jsonl", (
        "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{text}}\"\n"
        "metric_list:\n  - metric: word_perplexity\n  - metric: byte_perplexity\n"
        "  - metric: bits_per_byte\n")))
    (out / "wf_gen.yaml").write_text(_yaml("wf_gen", out / "gen.jsonl", (
        "output_type: generate_until\ndoc_to_text: \"Q: {{question}}\\nA:\"\n"
        "doc_to_target: \"{{answer}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\", \"?\"]\n  max_gen_toks: 12\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")))
    return out
