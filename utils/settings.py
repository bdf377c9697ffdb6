"""Settings declared once: a dataclass field per setting, its metadata written with `setting(...)`.

A field says its default, its command-line flag, the flag's argparse type (the bounds: `bounded_int`,
`bounded_float`, `seed_int`) or choices, its help, and whether it is part of the run's identity (it is
unless it opts out with `identity=False`, as settings of how a run executes do: workers, device,
folders). From the fields come, for any dataclass built this way (a subclass of `Settings`):

- `add_arguments(p)`: the flags;
- `from_args(args)`: the configuration read back from the parsed flags;
- `identity()`: the names of the settings that make two runs different runs;
- `check_values(values, where)`: values set outside the command line (a preset's, an architecture's
  under a protocol) checked with the flags' own types, since argparse never checks a default.

A setting on by default whose flag turns it off is declared with its positive name and a `--no-` flag
(`augment = setting(True, flag="--no-augment")`). A setting without a flag of its own (`flag=None`)
is read from `dest` on the parsed namespace when the command has such a flag, else it keeps its default.
Values outside a namespace (presets, protocols) are keyed by the flag's argparse dest (`no_augment`).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

from utils.errors import PipelineError
from utils.cli import Bounded, flag_given

__all__ = ["Setting", "Settings", "setting", "refusal", "check_defaults", "parsed_defaults"]

DERIVED = "<--the-field-name>"  # the flag named after the field: batch_size -> --batch-size


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a field declares besides its default (the keywords of `setting`)."""
    flag: str | None = DERIVED       # its option; None: no flag of its own (read from `dest` when there)
    help: str = ""
    type: Callable[[str], Any] | None = None  # the argparse type: its bounds (bounded_int, bounded_float, ...)
    choices: tuple | Callable[[], list] | None = None  # a callable is read when the flags are built
    identity: bool = True            # part of the run's identity (False: how the run executes)
    dest: str | None = None          # the namespace attribute read by from_args (default: the flag's dest)
    read: Callable[[Any], Any] | None = None  # the field's type from the parsed value (str for a path)
    metavar: str | None = None
    append: bool = False             # a repeatable flag whose items `read` turns into the field's value

    def dest_for(self, name: str) -> str:
        if self.dest is not None:
            return self.dest
        return self.flag.lstrip("-").replace("-", "_") if self.flag else name

    @property
    def negated(self) -> bool:
        """A setting on by default that its flag turns off (`--no-augment`)."""
        return bool(self.flag) and self.flag.startswith("--no-")


def setting(default: Any, help: str = "", **declared) -> Any:
    """A dataclass field declaring one setting: its default, help, and the `Setting` keywords (flag,
    type or choices, identity, ...)."""
    choices = declared.get("choices")
    if choices is not None and not callable(choices):
        declared["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata={"setting": Setting(help=help, **declared)})


@functools.cache
def _declared(cls: type) -> tuple[tuple[dataclasses.Field, Setting], ...]:
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("setting")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting(...)")
        if meta.flag == DERIVED:
            meta = dataclasses.replace(meta, flag="--" + f.name.replace("_", "-"))
        out.append((f, meta))
    return tuple(out)


def _add_flag(p: argparse.ArgumentParser, f: dataclasses.Field, s: Setting) -> None:
    """The field's flag: a switch for a bool (store_true, also for a `--no-` flag), a repeatable flag,
    or a value flag; a bounded type's range in its help."""
    help_text = s.help
    if isinstance(s.type, Bounded) and "%(type)s" not in help_text:
        help_text = f"{help_text}, %(type)s" if help_text else "%(type)s"
    if isinstance(f.default, bool):
        p.add_argument(s.flag, action="store_true", help=help_text or None)
        return
    extra = {"metavar": s.metavar} if s.metavar else {}
    if s.append:
        p.add_argument(s.flag, action="append", type=s.type, default=list(f.default), help=help_text or None, **extra)
        return
    choices = s.choices() if callable(s.choices) else s.choices
    p.add_argument(s.flag, type=s.type, default=f.default, choices=choices, help=help_text or None, **extra)


class Settings:
    """Base of a dataclass whose every field is a `setting`: flags, reading, identity and checks."""

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """One flag per setting that has one, in the order of the fields."""
        for f, s in _declared(cls):
            if s.flag is not None:
                _add_flag(p, f, s)
        return p

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides):
        """The settings from parsed flags (a setting the namespace lacks keeps its default); `overrides`
        win over the flags."""
        values = {}
        for f, s in _declared(cls):
            dest = s.dest_for(f.name)
            if f.name in overrides:
                value = overrides.pop(f.name)
            elif hasattr(args, dest):
                value = getattr(args, dest)
                value = (not value) if s.negated else value
            else:
                continue
            values[f.name] = s.read(value) if s.read is not None and value is not None else value
        if overrides:
            raise TypeError(f"{cls.__name__} has no setting(s) {sorted(overrides)}")
        return cls(**values)

    @classmethod
    def identity(cls) -> tuple[str, ...]:
        """The settings in which two runs must agree to be one run."""
        return tuple(f.name for f, s in _declared(cls) if s.identity)

    @classmethod
    def check_values(cls, values: Mapping[str, Any], where: str, not_settable: Sequence[str] = ()) -> None:
        """PipelineError, naming `where` and the key, for a value (keyed by flag dest) the flag would refuse
        or a key that is no flag of these settings (or is one of `not_settable`, left out of the known)."""
        check_defaults(cls.add_arguments(argparse.ArgumentParser(add_help=False)), values, where, strict=True,
                       not_settable=not_settable)


def flag_actions(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's flags (not its positionals), by dest."""
    return {a.dest: a for a in p._actions if a.option_strings}


def parsed_defaults(p: argparse.ArgumentParser, values: Mapping[str, Any], argv: Sequence[str] | None) -> dict:
    """`values` (keyed by dest, already checked) as defaults that parsing `argv` would give: argparse converts
    a text default through its flag's type, but not the texts of a repeatable flag's list; and it appends a
    repeatable flag's values to its default, where values given on the command line should replace them."""
    actions = flag_actions(p)
    out = dict(values)
    for key, value in values.items():
        action = actions.get(key)
        if isinstance(action, argparse._AppendAction) and isinstance(value, (list, tuple)):
            if flag_given(p, argv, action.option_strings[0]):
                del out[key]
            elif action.type is not None:
                out[key] = [action.type(v) if isinstance(v, str) else v for v in value]
    return out


def refusal(action: argparse.Action, value: Any) -> str | None:
    """Why `action` (a parsed flag) would not accept `value` as its value; None when it would."""
    if isinstance(action, argparse._StoreTrueAction):
        return None if isinstance(value, bool) else f"{value!r} is not true or false"
    if isinstance(action, argparse._AppendAction):  # a list of what the flag is given, each as text
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return f"{value!r} is not a list of {action.metavar or 'values'} texts"
        return next(filter(None, (_type_refusal(action.type, v) for v in value)), None)
    if value is None:
        return None if action.default is None else "None is not a value of this flag"
    if isinstance(action.type, Bounded) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{value!r} is not {'an integer' if action.type.kind is int else 'a number'}"
    why = _type_refusal(action.type, str(value))
    if why is not None:
        return why
    if action.choices is not None and value not in action.choices:
        return f"{value!r} is not one of {', '.join(map(str, action.choices))}"
    return None


def _type_refusal(kind: Callable | None, text: str) -> str | None:
    try:
        if kind is not None:
            kind(text)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
        return str(e)
    return None


def check_defaults(p: argparse.ArgumentParser, values: Mapping[str, Any], where: str, strict: bool = False,
                   not_settable: Sequence[str] = ()) -> None:
    """PipelineError for the first of `values` (keyed by argparse dest) that its flag in `p` refuses;
    with `strict`, a key that is no flag of `p` too (the flags `not_settable` counted as none)."""
    actions = {dest: a for dest, a in flag_actions(p).items() if dest not in not_settable}
    for key, value in values.items():
        action = actions.get(key)
        if action is None:
            if strict:
                raise PipelineError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(actions))})")
            continue
        why = refusal(action, value)
        if why is not None:
            raise PipelineError(f"{where}: {action.option_strings[0]} {value!r}: {why}")
