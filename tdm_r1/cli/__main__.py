"""``python -m tdm_r1.cli`` (what ``tdmbench --num-processes N`` starts in every process)."""

from tdm_r1.cli import app

app()
