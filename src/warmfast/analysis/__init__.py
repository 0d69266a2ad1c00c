"""warmfast.analysis: judged answers in, the study's statistics, figures and report out.

    load          the study's CSV layout -> judged frame (frame_from_study_layout is the seam)
    store_reader  a run's SQLite store -> judged frame
    preprocess    de-duplication, refusal rules, pooling of prompt types (with per-step counts)
    paired        McNemar exact, Cohen's g, odds ratio, BH FDR per model x task x belief table
    regress       M1-M4 (+ length) binomial GLMs, average marginal effects with delta-method CIs
    separation    LP check for (quasi-)separation before trusting a logistic fit
    published     the study's shipped summary tables in the paired-table schema
    figures       matplotlib (Agg) figures, PNG + SVG
    settings      report settings, the published way of computing (PUBLISHED_WAY), methods text
    report, render, cli   `warmfast report`: HTML + Markdown beside the published values

Importing this package imports nothing heavy; no module here imports torch.
"""
