"""Parsing step configs: TrlParser (YAML as defaults, CLI flags override, unknown keys rejected by name)."""

from __future__ import annotations

import difflib
import os
import types
import typing

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # srpo never fetches from a hub at run time


class ConfigError(ValueError):
    """A config a user can fix; the message says how."""


def unknown_key_error(where: str, keys: list[str], known: list[str]) -> ConfigError:
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return ConfigError(f"{where}: unknown key(s) {', '.join(hints)}. Remove them or fix the spelling; the known keys "
                       "are listed by `--help`.")


def parse_step_args(cls, argv=None):
    """A step's config from `--config FILE` and CLI flags; a misspelt key is an error naming it."""
    from trl import TrlParser

    parser = TrlParser([cls])
    (args, config_rest, cli_rest) = parser.parse_args_and_config(argv, return_remaining_strings=True,
                                                                 separate_remaining_strings=True)
    known = [a.dest for a in parser._actions]
    bad = [s[2:] for s in config_rest if s.startswith("--")]
    if bad:
        raise unknown_key_error("config file", bad, known)
    if cli_rest:
        raise unknown_key_error("command line", [s.lstrip("-") for s in cli_rest if s.startswith("-")] or cli_rest,
                                known)
    return args


def build_from_dict(cls, values: dict, where: str):
    """A config dataclass from a recipe section (a dict); unknown keys and wrong-typed values are errors naming the
    section and key. Choice (Literal) fields are left to the config's own check, which names the choices."""
    from srpo.configs import field_types

    types_ = field_types(cls)
    bad = sorted(set(values) - set(types_))
    if bad:
        raise unknown_key_error(where, bad, list(types_))
    values = {key: _coerce(value, types_[key], where, key) for key, value in values.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


_NUMBERS = (int, float)


class _WrongType(Exception):
    """What a value should have been (the words after 'must be')."""


def _coerce(value, tp, where: str, key: str):
    try:
        return _check_type(value, tp)
    except _WrongType as e:
        name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
        raise ConfigError(f"{where}: {key} must be {e} ({name}); got {value!r}") from None


def _check_type(value, tp):
    """`value` checked against the field type `tp`, numbers parsed from strings. A type not understood here (enums,
    dicts, Literal choices, unions with str such as TRL's `SchedulerType | str`) lets the value through untouched for
    the config itself to judge."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        members = tuple(a for a in args if a is not type(None))
        if value is None and len(members) < len(args):
            return None
        if len(members) == 1:
            return _check_type(value, members[0])
        if all(m in _NUMBERS for m in members):
            return _number(value, float if float in members else int)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _WrongType("true or false")
        return value
    if tp in _NUMBERS:
        return _number(value, tp)
    if tp is str:
        if isinstance(value, bool) or isinstance(value, list | dict):
            raise _WrongType("a string")
        # YAML reads `run_name: 2024` as a number; the command line would have given the text.
        return str(value) if isinstance(value, int | float) else value
    if origin is list and len(args) == 1 and args[0] in (str, *_NUMBERS):
        if isinstance(value, str) and args[0] is str:
            return [n.strip() for n in value.split(",") if n.strip()]  # the command line's comma-separated form
        what = f"a list of {args[0].__name__}" + (" or a comma-separated string" if args[0] is str else "")
        if not isinstance(value, list | tuple):
            raise _WrongType(what)
        try:
            return [_check_type(v, args[0]) for v in value]
        except _WrongType:
            raise _WrongType(what) from None
    return value


def _number(value, kind: type):
    expected = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise _WrongType(expected)
    if isinstance(value, str):
        # YAML reads 1e-3 (no dot) as a string; argparse would have converted it, so do the same here.
        try:
            return kind(value.strip())
        except ValueError:
            raise _WrongType(expected) from None
    # An int stays an int in a float field: converting it would change the step's fingerprint for nothing.
    if isinstance(value, int) or (kind is float and isinstance(value, float)):
        return value
    raise _WrongType(expected)
