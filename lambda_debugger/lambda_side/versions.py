"""What the Lambda side runs on: the Pythons and debugpy versions it
supports, and a check of the installed debugpy that does not import it.

Every debugpy version in the declared range is proven on the supported
Pythons (see ``.ci/matrix.py`` and ``docs/how-it-works.md``); one release
inside it fails on some of them and is left out by name.
"""

import os
import sys
from typing import Optional, Sequence, Tuple

#: The Pythons that Lambda runs and the package supports (python3.10 to 3.14).
SUPPORTED_PYTHONS = ((3, 10), (3, 11), (3, 12), (3, 13), (3, 14))

#: The debugpy versions the package works with, as setup.cfg declares them.
DEBUGPY_REQUIREMENT = "debugpy>=1.8.1,!=1.8.6,<2"
DEBUGPY_OLDEST = (1, 8, 1)  # returns no port from an in-process listen(); handled
DEBUGPY_BROKEN = ((1, 8, 6),)  # fails to start on Python 3.13 (sys.monitoring line tables)
DEBUGPY_BELOW = (2,)

#: A debugpy found whose version cannot be read without importing it.
UNKNOWN = "unknown"


def parse_version(text: str) -> Tuple[int, ...]:
    """The leading numbers of a version: ``1.8.22`` and ``1.8.22rc1`` give
    ``(1, 8, 22)``; text without them gives ``()``."""
    numbers = []
    for part in text.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(numbers)


def debugpy_problem(version: Optional[str]) -> Optional[str]:
    """Why this debugpy cannot serve, naming the version found and the one
    needed; None when it can (or when its version is ``UNKNOWN``: the child
    then checks the imported module's ``__version__``)."""
    if version is None:
        return "debugpy is not installed; lambda-debugger needs %s" % DEBUGPY_REQUIREMENT
    if version == UNKNOWN:
        return None
    found = parse_version(version)
    if not found or found < DEBUGPY_OLDEST or found >= DEBUGPY_BELOW or found in DEBUGPY_BROKEN:
        return "debugpy %s cannot serve; lambda-debugger needs %s" % (version, DEBUGPY_REQUIREMENT)
    return None


def installed_debugpy(path: Optional[Sequence[str]] = None) -> Optional[str]:
    """The version of the debugpy that ``import debugpy`` would load, read
    from the ``debugpy-<version>.dist-info`` beside it (a directory listing,
    not the ~10 ms of importlib.metadata). None when there is no debugpy;
    ``UNKNOWN`` for one installed without that record."""
    for entry in sys.path if path is None else path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        if "debugpy" not in names:
            continue
        for name in names:
            if name.startswith("debugpy-") and name.endswith(".dist-info"):
                return name[len("debugpy-") : -len(".dist-info")]
        return UNKNOWN
    return None
