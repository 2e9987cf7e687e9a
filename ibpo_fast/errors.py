"""Errors in what the user handed in (a config value, a task file, a model folder, a run folder).

They are `ValueError`s for library callers; the `ibpo-fast` command reports them in one line, without a
traceback, wherever in a run they surface. Anything else keeps its traceback: that is a bug to report.
"""


class InputError(ValueError):
    """The user's input is wrong; the message names the file, folder or key and what to do."""
