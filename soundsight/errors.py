"""User-facing errors.

A ``UserError`` is something the user can fix (bad input, unknown model, existing output):
the CLI prints ``error: <message>`` on one line and exits 2. Anything else is a bug: exit 1
with a hint to rerun with ``--debug``.
"""


class UserError(Exception):
    """A problem with the user's input or environment; printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: multi-line messages break the contract scripts rely on.
        super().__init__(" ".join(str(message).split()))


class InputError(UserError):
    """An input file is missing, unreadable or unusable."""


class OutputError(UserError):
    """An output cannot be written (exists without --force, is an input, folder unwritable)."""


class ModelError(UserError):
    """A registry model is unknown, incomplete or fails its checksum."""


class RecipeError(UserError):
    """A recipe is malformed or fails validation."""


class BatchError(UserError):
    """Items of a batch failed. The batch itself finished, so the message stays one line, but
    the exit code keeps the contract: 1 when any item failed with a bug, 2 when all were input
    problems."""

    def __init__(self, message: str, internal: bool):
        super().__init__(message)
        self.exit_code = 1 if internal else 2
