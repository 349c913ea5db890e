"""What every console script shares: a user's mistake is one line and exit status 2; a bug stays a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .video_processing_discovr import ClipSampling


class InputError(ValueError):
    """Bad input from the user: a path, a model folder, a manifest or an option. The message names it."""


# OS errors that name a path the user gave; any other exception is a bug and keeps its traceback.
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
USAGE_STATUS = 2


def one_line(error: BaseException) -> str:
    """The error's message on one line (multi-line messages keep every line, joined)."""
    if isinstance(error, PATH_ERRORS) and error.filename is not None:
        return f"cannot use {error.filename}: {error.strerror or error}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


CLIPS_HELP = (
    "Clips per video, averaged: center (one, in the middle), all (every start where a clip fits, EchoNet's test-time "
    "averaging), uniform:K or an integer K (K evenly spread starts), random (one random start)."
)


def clips_argument(value: str) -> ClipSampling:
    """`type=` of every `--clips` flag: the value checked when the command line is parsed."""
    try:
        return ClipSampling.parse(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_console_script(prog: str, body: Callable[[], int]) -> int:
    """Run a console script's body; report `InputError` and path errors as `prog: error: ...`, status 2."""
    try:
        return body()
    except (InputError, *PATH_ERRORS) as error:
        sys.stderr.write(f"{prog}: error: {one_line(error)}\n")
        return USAGE_STATUS


def model_type_of(model_dir: str | os.PathLike) -> str:
    """The `model_type` of a saved model folder; a folder Transformers cannot read as one raises `InputError`."""
    import transformers

    name = os.fspath(model_dir)
    # A Hub id is "name" or "owner/name"; anything else that is not a folder is a local path that does not exist.
    if not os.path.isdir(name) and (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1):
        raise InputError(f"model folder {name} does not exist")
    try:
        return transformers.AutoConfig.from_pretrained(model_dir).model_type
    except (OSError, ValueError) as error:
        raise InputError(f"{model_dir} is not a saved model folder: {one_line(error)}") from None


__all__ = ["CLIPS_HELP", "InputError", "clips_argument", "model_type_of", "one_line", "run_console_script"]
