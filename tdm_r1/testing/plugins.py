"""Loading a plug-in inside a test without leaking it into the next test.

A plug-in registers names in the process-wide registries and records itself in
``$TDMBENCH_PLUGINS`` (``tdm_r1.plugins``); :func:`isolated_plugins` undoes both, and forgets the
plug-in modules, when the block ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tdm_r1.plugins import ENV
from tdm_r1.registry import BENCHMARKS, METHODS, MODELS, REWARDS, Registry

#: Where installed packages live (never forgotten).
INSTALLED = (sys.prefix, sys.base_prefix)


@contextmanager
def isolated_plugins() -> Iterator[None]:
    """Registries, ``$TDMBENCH_PLUGINS`` and ``sys.modules`` as they were before the block."""
    regs: list[Registry] = [METHODS, REWARDS, MODELS, BENCHMARKS]
    for reg in regs:
        reg.names()  # the built-ins are loaded, so only the block's additions are undone
    saved = [(reg, dict(reg._entries), dict(reg._alias)) for reg in regs]
    modules, env, path = set(sys.modules), os.environ.get(ENV), list(sys.path)
    os.environ.pop(ENV, None)
    try:
        yield
    finally:
        for reg, entries, alias in saved:
            reg._entries.clear()
            reg._entries.update(entries)
            reg._alias.clear()
            reg._alias.update(alias)
        for name in set(sys.modules) - modules:  # the plug-in modules: not tdmbench, not installed
            file = str(getattr(sys.modules[name], "__file__", "") or "")
            if file and not name.startswith("tdm_r1") and not file.startswith(INSTALLED):
                sys.modules.pop(name, None)
        sys.path[:] = path
        if env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = env
