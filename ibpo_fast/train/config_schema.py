"""What a config dataclass says about itself, read generically: each field's type, default and docstring
(the string literal right below the field), and what is built from them: the `--help` listing, the
conversion of command-line strings to the field's type, type checks and nearest-name suggestions.

    check_types(self)                        # first line of a config's __post_init__
    convert(TrainConfig, {"steps": "3"})     # -> {"steps": 3}; strings become the field's type
    help_text(TrainConfig, preset_values)    # the field listing of `ibpo-fast train --help`
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import shutil
import textwrap
import types
import typing

import yaml


def field_docs(cls) -> dict[str, str]:
    """{field name: its docstring, one paragraph} from the class source ({} where the source is not shipped)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _args(tp) -> tuple:
    """The members of a union (`int | None`), else (tp,)."""
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def matches(value, tp) -> bool:
    """Whether `value` has type `tp` (int is a float; bool is not an int)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, member) for member in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(matches(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(matches(k, args[0]) and matches(v, args[1])
                                                            for k, v in value.items()))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def type_name(tp) -> str:
    """How the help spells a type: int, float, str, bool, list[int], int|null."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return "|".join(type_name(member) for member in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is not None:
        return repr(tp).replace("typing.", "")
    return tp.__name__


def _parse(value: str, tp):
    """A command-line string as the field's type: verbatim for a string field, else a YAML scalar (and a
    float where YAML 1.1 keeps "1e-3" a string)."""
    members = _args(tp)
    if str in members:
        return None if value == "null" and type(None) in members else value
    parsed = yaml.safe_load(value) if value.strip() else value
    if isinstance(parsed, str) and float in members:
        try:
            return float(parsed)
        except ValueError:
            pass
    return parsed


def convert(cls, values: dict) -> dict:
    """`values` with every string converted to its field's type (other values as given); unknown keys
    raise ValueError naming the nearest known key."""
    hints, known = _hints(cls), [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in values if key not in known]
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key{'s' if len(unknown) > 1 else ''} "
                         + ", ".join(_suggest(key, known) for key in unknown) + "; --help lists every key")
    return {key: _parse(value, hints[key]) if isinstance(value, str) else value for key, value in values.items()}


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def check_types(config) -> None:
    """ValueError naming the first field whose value does not have the field's type."""
    for name, tp in _hints(type(config)).items():
        value = getattr(config, name)
        if not matches(value, tp):
            raise ValueError(f"{name} must be {type_name(tp)}; got {value!r} ({type(value).__name__})")


def help_text(cls, preset_values: dict | None = None, preset: str = "") -> str:
    """One entry per field: `--name TYPE`, its default (and the preset's value when it differs), its
    docstring wrapped to the terminal."""
    hints, docs, preset_values = _hints(cls), field_docs(cls), preset_values or {}
    width = min(shutil.get_terminal_size((100, 24)).columns, 120) - 6
    lines = [f"{cls.__name__} fields, each as --key=value or --key value (strings as typed, other values as "
             "YAML: 3, 1e-3, true, null, [1,2]):"]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "required" if default is dataclasses.MISSING else f"default: {_yaml(default)}"
        if f.name in preset_values and preset_values[f.name] != default:
            shown += f"; preset {preset}: {_yaml(preset_values[f.name])}"
        lines.append(f"  --{f.name} {type_name(hints[f.name])}   ({shown})")
        lines += textwrap.wrap(docs.get(f.name, ""), width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                               break_on_hyphens=False)
    return "\n".join(lines)


def _yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
