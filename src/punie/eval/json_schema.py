"""A small JSON Schema validator for the ``json`` scorer.

It implements the keywords answers are usually checked with. A schema that
uses any other validation keyword is rejected when the suite loads, so no
constraint is silently ignored (and no answer passes a check that never ran).
"""

from __future__ import annotations

import re
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}
_ANNOTATIONS = {"$schema", "$id", "title", "description", "default", "examples", "format", "$comment"}
_SUPPORTED = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum",
              "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
              "maxItems", "uniqueItems", "anyOf", "oneOf", "allOf", "not"} | _ANNOTATIONS


def check_schema(schema: Any, where: str = "json_schema") -> str | None:
    """Why ``schema`` cannot be used (an unsupported keyword or a malformed value), or None."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return f"{where} must be an object"
    unknown = sorted(set(schema) - _SUPPORTED)
    if unknown:
        return f"{where} uses unsupported keyword(s) {unknown}; supported: {sorted(_SUPPORTED - _ANNOTATIONS)}"
    for name in _types_of(schema):
        if name not in _TYPES:
            return f"{where}.type {name!r} is not a JSON type"
    subs: list[tuple[str, Any]] = [(f"{where}.properties.{k}", v) for k, v in schema.get("properties", {}).items()]
    if "items" in schema:
        subs.append((f"{where}.items", schema["items"]))
    if isinstance(schema.get("additionalProperties"), dict):
        subs.append((f"{where}.additionalProperties", schema["additionalProperties"]))
    for key in ("anyOf", "oneOf", "allOf"):
        subs += [(f"{where}.{key}[{i}]", s) for i, s in enumerate(schema.get(key, []))]
    if "not" in schema:
        subs.append((f"{where}.not", schema["not"]))
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except re.error as exc:
            return f"{where}.pattern is not a valid regular expression: {exc}"
    for sub_where, sub in subs:
        problem = check_schema(sub, sub_where)
        if problem:
            return problem
    return None


def validate(instance: Any, schema: Any, path: str = "$") -> list[str]:
    """Every way ``instance`` violates ``schema`` (empty when it conforms)."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    errors: list[str] = []
    types = _types_of(schema)
    if types and not any(_is_type(instance, t) for t in types):
        return [f"{path}: expected {'/'.join(types)}, got {_type_name(instance)}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r:.60} is not one of {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {instance!r:.60}")
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        errors += _check_number(instance, schema, path)
    if isinstance(instance, str):
        errors += _check_string(instance, schema, path)
    if isinstance(instance, list):
        errors += _check_array(instance, schema, path)
    if isinstance(instance, dict):
        errors += _check_object(instance, schema, path)
    errors += _check_combinators(instance, schema, path)
    return errors


def _types_of(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    if declared is None:
        return []
    return list(declared) if isinstance(declared, list) else [declared]


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return name == "boolean"
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _check_number(value: float, schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: {value} is above the maximum {schema['maximum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"{path}: {value} must be greater than {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"{path}: {value} must be less than {schema['exclusiveMaximum']}")
    return errors


def _check_string(value: str, schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r:.60} does not match /{schema['pattern']}/")
    return errors


def _check_array(value: list[Any], schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: more than {schema['maxItems']} items")
    if schema.get("uniqueItems") and len({repr(v) for v in value}) != len(value):
        errors.append(f"{path}: items are not unique")
    if "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    errors = [f"{path}: missing required property {name!r}" for name in schema.get("required", [])
              if name not in value]
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in props:
            errors += validate(item, props[key], f"{path}.{key}")
        elif extra is False:
            errors.append(f"{path}: property {key!r} is not allowed")
        elif isinstance(extra, dict):
            errors += validate(item, extra, f"{path}.{key}")
    return errors


def _check_combinators(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    for sub in schema.get("allOf", []):
        errors += validate(value, sub, path)
    if "anyOf" in schema and not any(not validate(value, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema:
        hits = sum(not validate(value, s, path) for s in schema["oneOf"])
        if hits != 1:
            errors.append(f"{path}: matches {hits} of oneOf (exactly one required)")
    if "not" in schema and not validate(value, schema["not"], path):
        errors.append(f"{path}: matches a schema under 'not'")
    return errors
