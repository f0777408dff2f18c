"""The experiment runner and its cache: one run = (dataset, task, protocol, variant, fold, seed, options).

`train` (the training loop) -> `experiment` (one cross-validation run: train, evaluate, measure; cached under the
hash of its full config) -> `executors` (where a grid's runs are computed: local processes or Ray) -> `reproduce`
(the paper's grid), `sweep` (grids over alpha, bits, experts) and `jobs` (the app's background runs). `store` is the
results cache (one JSON record + arrays per run) and `results` its public table (`python -m qmoe results --csv`).
May import every layer below (core, audio, datasets, models, deploy, measure); never analysis or the app.
"""
