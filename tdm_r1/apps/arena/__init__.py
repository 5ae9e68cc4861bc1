"""The RL method arena (``tdmbench arena``): RL methods x start models x rewards on the toy world at
an equal reward-evaluation budget, with paired statistics against each run's start model.

``grid`` (cells, budget, config hash), ``run`` (train, evaluate, record one row per cell),
``figures`` (curves and image grids), ``outputs`` (the files under ``results/arena``).
"""
