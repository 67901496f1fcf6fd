"""Bad input, and how the console entry points report it: one line naming the culprit, exit status 2.

Every error type that bad input raises in this project (a table, an image, an instruction or predictions file, a
checkpoint, an export, a config value) derives from `InputError`, and its message names the file, row, field or value
and what was expected. The entry points (`grok.utils.config.hydra_entry`) print such an error as one line and exit with
`EXIT_BAD_INPUT`; any other exception is a bug and keeps its traceback. `HYDRA_FULL_ERROR=1` (or `GROK_DEBUG=1`) shows
the full traceback for bad input too.
"""

from __future__ import annotations

import os

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

EXIT_BAD_INPUT = 2
DEBUG_ENV = ("HYDRA_FULL_ERROR", "GROK_DEBUG")


class InputError(ValueError):
    """Bad input from the user; the message names the file, row, field or value and what was expected."""


# Library errors that only bad input raises; a message without the file name is a bug at the read site (wrap it there).
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InputError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    OmegaConfBaseException,
)


def unwrapped(error: BaseException) -> BaseException:
    """The error a Hydra `instantiate` wrapped (InstantiationException, possibly nested), else `error` itself: bad
    input met while building an object (a model reading its vocabulary corpus) is still bad input."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def is_bad_input(error: BaseException) -> bool:
    """True for an error that bad input raised (reported in one line), False for a bug (reported with a traceback)."""
    return isinstance(unwrapped(error), BAD_INPUT_ERRORS)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line report keeps its first line and says how many it left off)."""
    error = unwrapped(error)
    headline = getattr(error, "headline", None)  # a report's one-line form (e.g. a table's first problem)
    if isinstance(headline, str) and headline:
        return headline
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        text = f"{error.strerror or error}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    more = f" (+{len(lines) - 1} more line(s); set HYDRA_FULL_ERROR=1 for all)" if len(lines) > 1 else ""
    return lines[0] + more


def debug_requested() -> bool:
    """True when the user asked for full tracebacks (HYDRA_FULL_ERROR=1 or GROK_DEBUG=1)."""
    return any(os.environ.get(name, "").strip() not in ("", "0") for name in DEBUG_ENV)
