"""A model preset from outside the package: the toy teacher sampled with 8 Euler steps.

The walk-through of docs/extending.md ("Add a model"), run by tests/project/test_extending.py. A preset is
a name for weights plus how to sample them; this one reuses the toy teacher's weights with a short
schedule (8 steps x CFG 5 = 16 NFE), the kind of few-step baseline a leaderboard compares against.
A new architecture is a model *family* instead (``tdm_r1.models.families.register_family``).

    tdmbench --plugin examples/plugins/toy_teacher_8step.py eval --model toy-teacher-8step --benchmark toy-ocr
"""

from __future__ import annotations

import dataclasses

from tdm_r1.models.preset import register_preset, resolve_model

teacher = resolve_model("toy-teacher")
register_preset(
    dataclasses.replace(
        teacher,
        name="toy-teacher-8step",
        sampling=dataclasses.replace(teacher.sampling, steps=8),
        baseline="toy-teacher",
        sources="toy-teacher's weights, 8 Euler steps x CFG 5 = 16 NFE (examples/plugins/toy_teacher_8step.py)",
    )
)
