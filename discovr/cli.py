"""What every console script shares: options parsed from one dataclass by `HfArgumentParser`, and a user's mistake
reported as one line with exit status 2 (a bug stays a traceback)."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import HfArgumentParser

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


SPATIAL_CROPS_HELP = (
    "Test-time spatial crops per clip, averaged with the clips: the shorter side resized to the model size and that "
    "many square crops spread along the longer side (VideoMAE's protocol uses 3; on square videos, EchoNet's, they "
    "coincide). 1 resizes the whole frame, as training does."
)


def clips_argument(value: str) -> ClipSampling:
    """`type=` of every `--clips` flag: the value checked when the command line is parsed."""
    try:
        return ClipSampling.parse(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def argument(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A dataclass field that is a command-line option: its default, its `--help` text, and any other
    `add_argument` keyword (`metavar`, `choices`, `nargs` for a list of fixed length, ...).

    `parse=` replaces the type's own conversion (e.g. [`clips_argument`]); `positional=True` makes it a positional
    argument; `default_help=` says in `--help` what the default is when the value alone would not (e.g. "the
    recipe's")."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is nothing to show (None, an off flag), and a field's own
    wording of it where it has one (`argument(default_help=...)`)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default_help = getattr(action, "default_help", None)
        if default_help is not None:
            return f"{action.help} (default: {default_help})"
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class RawEpilogHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """[`HelpFormatter`] that keeps the description's and epilog's own line breaks (for tables)."""


class DiscovrArgumentParser(HfArgumentParser):
    """`HfArgumentParser` for one options dataclass, with positional arguments and custom parsing from field
    metadata (see [`argument`]). Options keep their `--snake_case` spelling; help shows every default."""

    def __init__(
        self, options_class: type, prog: str, description: str, epilog: str | None = None, raw_epilog: bool = False
    ):
        super().__init__(
            options_class, prog=prog, description=description, epilog=epilog,
            formatter_class=RawEpilogHelpFormatter if raw_epilog else HelpFormatter,
        )
        self.options_class = options_class

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        metadata = dict(field.metadata)
        parse, positional = metadata.pop("parse", None), metadata.pop("positional", False)
        default_help = metadata.pop("default_help", None)
        # A fixed count of list values (HfArgumentParser asks for "+"), with a metavar per value.
        fixed_nargs = {}
        if "nargs" in metadata:
            fixed_nargs = {key: metadata.pop(key) for key in ("nargs", "metavar") if key in metadata}
        field = copy.copy(field)  # the class's own field keeps its metadata for the next parser
        field.metadata = metadata
        before = len(parser._actions)
        HfArgumentParser._parse_dataclass_field(parser, field)
        # HfArgumentParser also accepts a --dashed-spelling of each option (and of its --no_ complement); the
        # documented --snake_case one is enough.
        for added in parser._actions[before:]:
            for option in [o for o in added.option_strings if o.startswith("--") and "-" in o[2:]]:
                added.option_strings.remove(option)
                parser._option_string_actions.pop(option, None)
        action = parser._actions[before]
        for complement in parser._actions[before + 1 :]:
            complement.help, complement.default = f"Turn --{field.name} off.", argparse.SUPPRESS
        if parse is not None:
            action.type = parse
        action.default_help = default_help
        for key, value in fixed_nargs.items():
            setattr(action, key, value)
        if action.required:
            action.default = argparse.SUPPRESS  # a required value has no default to show in --help
        if positional:
            parser._remove_action(action)
            for group in parser._action_groups:
                if action in group._group_actions:
                    group._group_actions.remove(action)
            for option in action.option_strings:
                parser._option_string_actions.pop(option, None)
            nargs = {"nargs": action.nargs} if action.nargs is not None else {}
            parser.add_argument(field.name, help=action.help, type=action.type, metavar=action.metavar, **nargs)

    def parse(self, argv: Sequence[str] | None = None) -> Any:
        """The options dataclass from `argv`; an invalid value (its `__post_init__` raising `InputError` or
        `ValueError`) is reported like any other usage error: one line, exit status 2."""
        namespace = self.parse_args(argv)
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(self.options_class) if f.init}
        try:
            return self.options_class(**values)
        except ValueError as error:  # InputError included
            self.error(one_line(error))


def run_console_script(prog: str, body: Callable[[], int]) -> int:
    """Run a console script's body; report `InputError` and path errors as `prog: error: ...`, status 2."""
    try:
        return body()
    except (InputError, *PATH_ERRORS) as error:
        sys.stderr.write(f"{prog}: error: {one_line(error)}\n")
        return USAGE_STATUS


def default_device(device: str | None) -> str:
    """`device` as given, else `cuda` when a GPU is available, else `cpu`: the console scripts' default."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


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


__all__ = [
    "CLIPS_HELP",
    "SPATIAL_CROPS_HELP",
    "DiscovrArgumentParser",
    "HelpFormatter",
    "InputError",
    "argument",
    "clips_argument",
    "default_device",
    "model_type_of",
    "one_line",
    "run_console_script",
]
