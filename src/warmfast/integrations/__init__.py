"""warmfast inside other evaluation tools (optional extras; nothing here is imported by `import warmfast`).

    lm_eval_backend   lm-evaluation-harness model backend `warmfast` (pip install warmfast[lm-eval])
    lm_eval_cli       `warmfast lm-eval ...`: registers the backend, hands the arguments to lm-eval,
                      expands `arm=all` into one results entry per arm from one scoring pass
    inspect_provider  inspect_ai entry point: registers the provider `warmfast/<adapter or base>`
    inspect_api       that provider (warmfast[inspect]); batcher: its cross-arm generate batches
    engines           one Engine per process for every backend instance that names the same model
"""
