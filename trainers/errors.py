"""User-facing errors: anything a user can fix by editing a recipe, an override, data or the environment.

`launch.py` prints these as one paragraph and exits with `exit_code` (2), also when a worker of its launcher
raised one; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose message says what is wrong, where, and what to do about it."""

    exit_code = 2


class RecipeError(UserFacingError):
    """The recipe file, an override or the resolved configuration is invalid."""


class FreezeTargetError(RecipeError):
    """A freeze/unfreeze/stage/param-group expression matches nothing in the model."""
