"""geoseg: land-cover maps from very-high-resolution orthophotos with MANet (Li et al., IEEE TGRS 2021)."""

__version__ = "0.1.0"
