"""User-facing errors.

A :class:`HarnessError` is a user mistake (bad config, bad data, unknown name, no network and no
cache...). The CLI prints ``str(exc)`` as one line on stderr and exits with status 2, without a
traceback. The message names what is wrong *and* what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """A user mistake; the message is one line naming the problem and the fix."""


class ConfigError(HarnessError):
    """Invalid configuration value (the message starts with the dotted field name)."""


class DataError(HarnessError):
    """Input data that cannot be used as given."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> HarnessError:
    """The error for a name missing from a registry: names the valid ones and the closest."""
    valid = sorted(valid)
    return HarnessError(
        f"unknown {kind} '{name}'{did_you_mean(name, valid)}; valid: {', '.join(valid)}"
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (trailing dots trimmed), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0].rstrip(". ") if text else type(exc).__name__
