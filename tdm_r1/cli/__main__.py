"""``python -m tdm_r1.cli`` (what ``tdmbench --num-processes N`` and ``tdmbench arena`` start).

Guarded: reward worker processes started with spawn / forkserver import the main module again.
"""

from tdm_r1.cli import app

if __name__ == "__main__":
    app()
