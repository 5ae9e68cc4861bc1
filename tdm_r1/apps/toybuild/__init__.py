"""``tdmbench toy build``: the toy world's dataset (rendered scenes) and the training of its models."""
