"""Argument types shared by the `crema` sub-commands (standard library only: the parser must build fast)."""

from __future__ import annotations

import argparse
from typing import Callable


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type accepting whole numbers >= `minimum`, with a one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"whole_number_from_{minimum}"
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)
