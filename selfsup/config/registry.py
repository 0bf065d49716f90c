"""The schema registry. A schema dataclass names the config path its YAMLs pull with `@schema`, the same
string they write after /schema/ (`defaults: [/schema/method/simclr@_here_, _self_]`): the path lives once,
beside the class, and `register_configs` hands every registered schema to Hydra's ConfigStore."""

from __future__ import annotations

from typing import Callable, TypeVar

Schema = TypeVar("Schema", bound=type)

SCHEMAS: dict[str, type] = {}  # "<group>/<option>" -> dataclass; <option> is `base` for a group's shared schema


def schema(path: str) -> Callable[[Schema], Schema]:
    """Register the decorated dataclass as `schema/<path>`, e.g. @schema("method/simclr")."""
    group, _, option = path.partition("/")
    if not group or not option or "/" in option:
        raise ValueError(f"a schema path is <group>/<option>, got {path!r}")

    def register(cls: Schema) -> Schema:
        if SCHEMAS.setdefault(path, cls) is not cls:
            raise ValueError(f"two schemas for {path}: {SCHEMAS[path].__qualname__} and {cls.__qualname__}")
        return cls

    return register
