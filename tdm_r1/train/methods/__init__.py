"""Training methods: plug-ins of the training loop (see :mod:`tdm_r1.train.methods.base`).

This module is the catalogue of the built-in methods. Each entry names, lazily (so that listing
methods, parsing a config and ``tdmbench --help`` import no torch):

- the plug-in class (``<method>.py``: the per-micro-batch update on top of the pure losses in
  ``tdm_r1.losses``);
- its options dataclass (``<method>_config.py``), the config section ``method.<section>``;
- whether it takes a reward, and the method trained instead without one;
- its toy-world recipes per start model (``tdm_r1/recipes/``), which ``tdmbench train`` defaults to
  and the arena trains.

Every list of methods (CLI help, ``tdmbench ls methods``, config checks, the arena grid) is read
from the registry. A method from outside the package registers the same facts with
:func:`tdm_r1.registry.register_method` in a plug-in module (``--plugin MODULE``); see
docs/extending.md.
"""

from __future__ import annotations

from tdm_r1.registry import METHODS

_M = "tdm_r1.train.methods"

METHODS.add_lazy(
    "tdm-r1",
    f"{_M}.tdm_r1:TdmR1",
    builtin=True,
    reward=True,
    without_reward="distill",
    toy_recipes={"toy-4step": "toy-{reward}"},
)
METHODS.add_lazy("distill", f"{_M}.tdm_r1:Distill", builtin=True, reward=False)
METHODS.add_lazy(
    "flow-grpo",
    f"{_M}.flow_grpo:FlowGrpo",
    builtin=True,
    reward=True,
    options=f"{_M}.flow_grpo_config:FlowGrpoOptions",
    section="flow_grpo",
    toy_recipes={
        "toy-4step": "toy-flow-grpo-4step-{reward}",
        "toy-teacher": "toy-flow-grpo-teacher-{reward}",
    },
)
METHODS.add_lazy(
    "diffusionnft",
    f"{_M}.diffusionnft:DiffusionNft",
    builtin=True,
    reward=True,
    options=f"{_M}.diffusionnft_config:DiffusionNftOptions",
    section="diffusionnft",
    toy_recipes={
        "toy-4step": "toy-diffusionnft-4step-{reward}",
        "toy-teacher": "toy-diffusionnft-teacher-{reward}",
    },
)
METHODS.add_lazy(
    "dgpo",
    f"{_M}.dgpo:Dgpo",
    builtin=True,
    reward=True,
    options=f"{_M}.dgpo_config:DgpoOptions",
    section="dgpo",
    toy_recipes={"toy-4step": "toy-dgpo-4step-{reward}", "toy-teacher": "toy-dgpo-teacher-{reward}"},
)
