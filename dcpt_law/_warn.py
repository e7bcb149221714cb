"""``emit``: warnings.warn pointed at the user's line, not at the package's internals; the package's warning classes."""
import os
import sys
import warnings

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep


def emit(message: str, category=UserWarning) -> None:
    """Emit ``message`` attributed to the first caller outside dcpt_law."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PKG):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class FitWarning(UserWarning):
    """A fit result that needs care: a parameter at a bound, a non-monotone law."""


class ExtrapolationWarning(UserWarning):
    """A prediction far outside the fitted range of N or D, or of the base losses G of a G-based law."""
