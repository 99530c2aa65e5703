"""`python -m trainer tune`: hyperparameter sweeps and seed studies on Ray Tune, each trial a full
training run in its own placement group (space.py: the search space; trial.py: one trial;
run.py: the sweep; results.py: its per-trial lines, results.csv and best_config.yaml)."""
