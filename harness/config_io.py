"""Reading config text: YAML (numbers with exponents are numbers), dotted ``--set`` keys, and
pydantic's validation errors as one line naming the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError, did_you_mean


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file or none for the default")
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (experiment:, data:, ...), got {type(raw).__name__}")
    return raw


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-2``, ``5e-1`` and ``1.0e5`` are numbers
    (YAML 1.1, which PyYAML follows, needs a dot and a signed exponent and reads them as strings)."""


_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE)
_Loader.yaml_implicit_resolvers = {  # the float resolver replaced in place: int and timestamp still come first
    first: [(tag, _FLOAT if tag == _FLOAT_TAG else pattern) for tag, pattern in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 numbers (``1e-2`` is 0.01): config files and ``--set`` values."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: as safe as yaml.safe_load


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set inside a non-mapping value")
    node[leaf] = value


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping of fields",
}


def _first_error(exc: ValidationError, root: type[BaseModel]) -> str:
    error = exc.errors(include_url=False)[0]
    loc = [part for part in error["loc"] if not _is_union_tag(part)]
    field = _dotted(loc) or "config"
    kind = error["type"]
    got = error.get("input")
    if kind == "extra_forbidden":
        parent_fields = _fields_at(loc[:-1], root)
        hint = did_you_mean(str(loc[-1]), parent_fields)
        return f"{field}: unknown key{hint}; valid keys here: {', '.join(parent_fields)}"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{field}: {message}"
    template = _MESSAGES.get(kind)
    ctx = {key: f"{value:g}" if isinstance(value, float) else value for key, value in error.get("ctx", {}).items()}
    message = template.format(**ctx) if template else str(error["msg"]).lower()
    return f"{field}: {message}, got {got!r}"


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the tried member type of a union (``int``, ``str``, ``function-after[...]``) in ``loc``."""
    return isinstance(part, str) and (
        part in {"int", "str", "float", "bool", "none"} or part.startswith(("function-", "dict[", "list[", "literal["))
    )


def _dotted(loc: list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out


def _fields_at(loc: list, root: type[BaseModel]) -> list[str]:
    model: type[BaseModel] = root
    for part in loc:
        if not isinstance(part, str):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return list(model.model_fields)
