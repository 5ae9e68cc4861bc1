"""Training methods: plug-ins of the training loop (see :mod:`tdm_r1.train.methods.base`)."""
