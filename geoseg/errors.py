"""One exception hierarchy for the whole library.

The CLI turns every ``GeosegError`` into a one-line message and exit code 1; nothing here knows about click.
Messages say what was received, what is allowed and, where possible, what to do.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose."""


class InputError(GeosegError):
    """An input file (raster, label, card) is missing, unreadable or unsuitable."""


class CheckpointError(GeosegError):
    """A checkpoint is missing, corrupt, unsafe or does not match the network."""


class CardError(GeosegError):
    """A model card is malformed or contradicts the weights."""


class OutputError(GeosegError):
    """An output cannot be written (exists without overwrite, unwritable folder, unknown format)."""


class ConfigurationError(GeosegError):
    """Options that cannot work together, or values outside what is allowed (tile size, device...)."""


class AgreementError(ConfigurationError):
    """A reduced precision (int8) refused because it changes the classes of too many measured pixels: a
    verdict on the model and the tiles measured, kept by the export cache so that a rerun refuses at once."""


class GeosegWarning(UserWarning):
    """Something worth telling the user that does not stop the work (a raster without CRS...)."""


def one_line(message: object) -> str:
    """``message`` (an error, or text) on one line, its runs of whitespace as single spaces: how the CLI, a
    ``--keep-going`` scene's error and a remote failure's detail all show an error."""
    return " ".join(str(message).split())


def check_whole_number(parameter: str, value: object, low: int, high: int | None, advice: str) -> None:
    """Refuse ``value`` unless it is None or a whole number in ``low..high`` (``high`` None: no upper
    bound), naming the parameter: what numpy and GDAL would refuse later with a bare ``ValueError``."""
    import numbers

    if value is None:
        return
    if isinstance(value, numbers.Integral) and value >= low and (high is None or value <= high):
        return
    raise ConfigurationError(f"{parameter}={value!r}: {advice}")


def check_seed(seed: object) -> None:
    """Refuse a random seed numpy cannot take (it raises a bare ``ValueError`` for a negative one);
    ``None`` draws a fresh seed."""
    check_whole_number("seed", seed, 0, None, "give a whole number, 0 or more")
