"""geoseg: land-cover maps from very-high-resolution orthophotos with MANet (Li et al., IEEE TGRS 2021).

The public API lives in :mod:`geoseg.api` and is re-exported here lazily, so that ``import geoseg`` (and the
command line's ``--help``) does not pay for importing torch.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    import importlib

    api = importlib.import_module("geoseg.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib

    api = importlib.import_module("geoseg.api")
    return sorted([*globals(), *api.__all__])
