"""Training and evaluation: labelled datasets (labels), model instances (dataset), the evaluation protocols, online replays and the default engine's training."""
