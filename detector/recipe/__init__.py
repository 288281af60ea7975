"""schedule=auto: a training recipe fitted to the training split (statistics.py reads it,
choices.py decides from the figures, apply.py writes the decisions into the config)."""
