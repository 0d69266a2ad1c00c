"""warmfast.run: the study grid as resumable jobs.

config.py     YAML -> validated dataclasses (errors name the file and the key)
plan.py       config -> content-keyed generation jobs, all arms of a prompt side by side
store.py      SQLite (WAL) results store: jobs, generations, judgements, LLM reply cache
judging.py    judging stages: refusal rules, LLM judge (log-prob | OpenAI-compatible), extraction
runner.py     generate in fixed chunks -> judge -> export; resumes after a kill; --shard for ranks
export.py     CSV / Parquet in the study's column layout
labelled.py   `warmfast judge --labelled`: any judge scored against labelled outputs
demo_grid.py  the demo's grid step; cli.py: `warmfast run`, `warmfast judge`
"""
