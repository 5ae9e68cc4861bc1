"""Human binary likes: a SQLite label store (:mod:`.db`), the labelling web app (:mod:`.app`),
a simulated rater that uses the app over HTTP (:mod:`.simrater`) and the ``tdmbench label``
command (:mod:`.command`). The rewards ``likes`` / ``likes-sim`` live in ``tdm_r1.rewards.likes``.

Importing this package is cheap: FastAPI, uvicorn and httpx are imported by the modules that
need them (the ``[label]`` extra).
"""
