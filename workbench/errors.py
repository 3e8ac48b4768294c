"""User-facing errors.

Every problem a user can cause (bad model name, missing file, layer out of range, ...) is raised
as a :class:`WorkbenchError` whose message is one line naming the problem and the fix. The CLI
prints that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """A problem with the user's input, with a message that says how to fix it.

    The message is always one line: line breaks from echoed input (a path or a prompt typed
    with a newline) are shown escaped, so no caller has to clean what it quotes.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def check(condition: bool, message: str) -> None:
    """Raise :class:`WorkbenchError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WorkbenchError(message)
