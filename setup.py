"""Package discovery for the wheel; pyproject.toml holds everything else.

Every package is found, none is listed by hand (a hand-written list once left ``tdm_r1.cli`` out
of the wheel). ``rewards/`` and ``benchmarks/`` are installed under the ``tdm_r1`` namespace only
(``tdm_r1.rewards``, ``tdm_r1.benchmarks``): ``rewards`` and ``benchmarks`` are unrelated projects
on the package index, so they are never top-level import names. ``tests/test_packaging.py`` builds
the wheel and checks that it holds every tracked file of these folders.
"""

from setuptools import find_packages, setup

#: Folders installed under another package name.
MAPPED = {"tdm_r1.rewards": "rewards", "tdm_r1.benchmarks": "benchmarks"}


def packages() -> list[str]:
    """``tdm_r1`` and all its subpackages, and the mapped folders with theirs."""
    found = find_packages(include=["tdm_r1", "tdm_r1.*"])
    for name, folder in MAPPED.items():
        found += [name, *(f"{name}.{sub}" for sub in find_packages(where=folder))]
    return sorted(found)


setup(packages=packages(), package_dir=MAPPED)
