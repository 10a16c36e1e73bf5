"""Numeric command-line options with declared ranges, checked after parsing.

Each numeric option is added with :func:`number`, which records its range on the subparser (as the
default of the hidden ``_ranges`` attribute); :func:`check_ranges` then checks the parsed values
and raises a one-line :class:`~flowvae.errors.ConfigError` (exit status 1) for a value out of range.
Text that is not a number at all stays argparse's usage error (exit status 2). Checking after
parsing, rather than in argparse ``type=`` functions, lets the message name the option and keeps
range errors on the same path (and exit status) as every other error caused by input.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["Range", "number", "check_ranges"]


@dataclass(frozen=True)
class Range:
    """The admissible values of one numeric option.

    Attributes:
        dest: the option's attribute on the parsed namespace.
        flags: how the option is spelt in messages, e.g. ``"-k/--k"``.
        integer: whether values are integers (else finite floats).
        ge: smallest admissible value, inclusive (``None``: no lower bound).
        gt: exclusive lower bound (``None``: none).
    """

    dest: str
    flags: str
    integer: bool
    ge: float | None = None
    gt: float | None = None

    def describe(self) -> str:
        """``"an integer >= 1"``, ``"a finite number > 0"``, ..."""
        what = "an integer" if self.integer else "a finite number"
        if self.ge is not None:
            return f"{what} >= {self.ge:g}"
        if self.gt is not None:
            return f"{what} > {self.gt:g}"
        return what

    def admits(self, value: float) -> bool:
        """Whether ``value`` is in range (finite, and above the bounds)."""
        if not math.isfinite(value):
            return False
        return (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` unless every value (one, or each of a list) is in range; ``None``
        (an optional option left unset) is admissible."""
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not self.admits(v):
                raise ConfigError(f"{self.flags} must be {self.describe()}, got {v if self.integer else format(v, 'g')}")


def number(p: argparse.ArgumentParser, *flags: str, integer: bool = True, ge: float | None = None,
           gt: float | None = None, **kw: Any) -> argparse.Action:
    """``p.add_argument(*flags, **kw)`` for an integer (or float) option whose range is checked by
    :func:`check_ranges` after parsing."""
    action = p.add_argument(*flags, type=int if integer else float, **kw)
    ranges = list(p.get_default("_ranges") or [])
    spelt = "/".join(action.option_strings) or action.metavar or action.dest
    ranges.append(Range(action.dest, str(spelt), integer, ge, gt))
    p.set_defaults(_ranges=ranges)
    return action


def check_ranges(args: argparse.Namespace) -> None:
    """Check every option declared with :func:`number` on the chosen subcommand.

    Raises:
        ConfigError: the first value out of range, as ``"-k/--k must be an integer >= 1, got 0"``.
    """
    for r in getattr(args, "_ranges", None) or []:
        r.check(getattr(args, r.dest, None))
