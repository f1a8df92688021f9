"""Generic helpers over trees of frozen dataclass configs, and the checks every config uses (docs/DESIGN.md, Configuration).

``to_dict``/``from_dict`` (YAML- and JSON-safe, type-checked with messages that name the field),
``apply_overrides`` (dotted keys), ``flatten``, ``layer`` (dotted mappings in precedence order), ``config_hash``,
``late_field`` (a field added after configs were hashed), and ``check_choice``/``check_int``/``check_number`` (one message form: the field, the value, what
is allowed). Pure Python, no project imports: ``senet.config`` and ``ablations.config`` build on it.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import field
from typing import Any

# Field metadata of a field added after configs were hashed: ``to_dict`` (and so ``config_hash``) leaves it
# out while it holds its default, so every config made before the field existed keeps its dict and hash.
OMIT_AT_DEFAULT = "senet.omit_at_default"


def late_field(default: Any) -> Any:
    """A dataclass field that enters ``to_dict``/``config_hash`` only when set away from ``default``."""
    return field(default=default, metadata={OMIT_AT_DEFAULT: True})


# ---- The checks every config and command uses: one message form, naming the field, the value, what is allowed ---- #


def did_you_mean(value: Any, allowed: Sequence[Any]) -> str:
    """``" (did you mean X or Y?)"`` for the closest of ``allowed`` to a mistyped name (difflib), else ``""``."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def check_choice(where: str, value: Any, allowed: Sequence[Any]) -> None:
    """``ValueError`` unless ``value`` is one of ``allowed`` (``where``: the field's full key, ``model.se.gate``)."""
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not allowed{did_you_mean(value, allowed)}; "
                         f"choose one of: {', '.join(map(str, allowed))}")


def check_int(where: str, value: Any, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}={value!r} is not allowed; it must be an integer >= {minimum}")


def check_number(where: str, value: Any, minimum: float = 1) -> None:
    """``ValueError`` unless ``value`` is a number (int or float, not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{where}={value!r} is not allowed; it must be a number >= {minimum}")


# ---- Generic helpers over trees of frozen dataclasses ---- #


def to_dict(cfg: Any) -> dict:
    """``asdict`` with tuples turned into lists, so it round-trips through YAML and JSON.

    A ``late_field`` at its default is left out (``from_dict`` restores it), so the dict and
    ``config_hash`` of a config made before that field existed do not change.
    """

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)
                    if not (f.metadata.get(OMIT_AT_DEFAULT) and getattr(v, f.name) == f.default)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``Optional[T]`` / ``T | None``, else ``(tp, False)``: the tree helpers' type reading."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


# What a field of each type accepts, for the message (a float field takes integers too).
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _is_kind(tp: type, value: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) and (tp is bool or not isinstance(value, bool))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the field type ``tp`` (lists become tuples); a wrong type is a ``ValueError``
    naming the key, so a typo never reaches a comparison deep inside a ``__post_init__`` as a ``TypeError``."""
    tp, optional = unwrap_optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}={value!r} is not allowed; expected a mapping of {tp.__name__} fields")
        return from_dict(tp, value, prefix=where)
    if tp in _KINDS:
        if not _is_kind(tp, value):
            hint = " (quote it to keep it as text: '...')" if tp is str and isinstance(value, (int, float)) else ""
            raise ValueError(f"{where}={value!r} is not allowed; it must be {_KINDS[tp]}{hint}")
        return value
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner in _KINDS and not (isinstance(value, (list, tuple)) and all(_is_kind(inner, v) for v in value)):
            raise ValueError(f"{where}={value!r} is not allowed; it must be a list of {_PLURALS[inner]}")
        if not isinstance(value, (list, tuple)):
            return value  # the class's own check names what it wants (se.skip_blocks: (stage, block) pairs)
        if inner is not None:
            return tuple(_coerce(inner, v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build a (nested) dataclass from a plain dict; unknown keys are an error naming the allowed ones."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ValueError(f"unknown key {where}{unknown[0]}; allowed keys: {', '.join(where + n for n in names)}"
                         + did_you_mean(where + unknown[0], [where + n for n in names]))
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """Parse a command-line value with YAML rules (``8`` -> int, ``true`` -> bool, ``[2,3]`` -> list)."""
    import yaml

    return yaml.safe_load(text) if isinstance(text, str) else text


def apply_overrides(cfg: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """Return ``cfg`` with dotted-key overrides applied (``{"model.se.reduction": 8}``).

    Setting a field under an optional sub-config that is ``None`` (``model.se.reduction`` on a
    baseline) starts from that sub-config's defaults; ``model.se=null`` turns SE off.
    """
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:  # prefix already ends with "." ("model.se.")
            raise ValueError(f"unknown key {prefix}{key}; allowed keys: {', '.join(prefix + n for n in names)}"
                             + did_you_mean(prefix + key, [prefix + n for n in names]))
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = _coerce(hints[head], value, prefix + head)
    for head, sub in grouped.items():
        current = direct.get(head, getattr(cfg, head))
        tp, _ = unwrap_optional(hints[head])
        if current is None:
            if not dataclasses.is_dataclass(tp):
                raise ValueError(f"unknown key {prefix}{head}.{next(iter(sub))}: {prefix}{head} has no fields")
            current = tp()
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown key {prefix}{head}.{next(iter(sub))}: {prefix}{head} has no fields")
        direct[head] = apply_overrides(current, sub, prefix=f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def flatten(d: dict, prefix: str = "", keep_empty: bool = False) -> dict[str, Any]:
    """``{"model": {"se": {"reduction": 8}}}`` -> ``{"model.se.reduction": 8}``; ``keep_empty`` keeps an empty
    mapping as a value (``{"trian": {}}`` -> ``{"trian": {}}``), so a key check still sees it."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and (v or not keep_empty):
            out.update(flatten(v, key + ".", keep_empty))
        else:
            out[key] = v
    return out


def layer(*mappings: dict[str, Any]) -> dict[str, Any]:
    """Dotted-key mappings merged in order, later wins; a later key replaces every earlier key below it, so
    ``model.se=null`` after ``model.se.reduction=8`` is the no-SE arm (one ``apply_overrides`` call would
    read the pair as "SE on, r=8"), so a precedence is a list of layers (``ablations.experiment``). Nested mappings
    are flattened (an empty one is kept, for the unknown-key check); a ``model`` name (a string) is kept."""
    out: dict[str, Any] = {}
    for mapping in mappings:
        for key, value in flatten(mapping, keep_empty=True).items():
            for below in [k for k in out if k.startswith(key + ".")]:
                del out[below]
            out[key] = value
    return out


def config_hash(cfg: Any, length: int = 12) -> str:
    """A stable identifier of a config (independent of key order)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
