"""pmacct map files: a generic reader (`key=value` words per line, `!` comments) and the maps built on it.

    rules = read_map(path, keys=("id", "ip", "in", "out"), required=("id", "ip"))   # -> list[MapRule]

A map problem raises MapError naming the file and line (at start-up the supervisor turns it into a
configuration error; on reload the old map is kept and the error logged).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional


class MapError(ValueError):
    def __init__(self, message: str, path: str, line: Optional[int] = None) -> None:
        self.message, self.path, self.line = message, path, line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        return MapError, (self.message, self.path, self.line)


@dataclass(frozen=True)
class MapRule:
    values: dict            # key -> value text, as written
    line: int


def parse_map_text(text: str, path: str, keys: Iterable[str], required: Iterable[str] = ()) -> list[MapRule]:
    """Lines of `key=value` words separated by blanks; `!` starts a comment line; keys case-insensitive."""
    allowed = {k.lower() for k in keys}
    rules = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        values: dict[str, str] = {}
        for word in line.split():
            if "=" not in word:
                raise MapError(f"expected key=value, got {word!r}", path, number)
            key, value = word.split("=", 1)
            key = key.lower()
            if key not in allowed:
                raise MapError(f"unknown key {key!r} (valid: {', '.join(sorted(allowed))})", path, number)
            if not value:
                raise MapError(f"key {key!r} has no value", path, number)
            if key in values:
                raise MapError(f"key {key!r} given twice", path, number)
            values[key] = value
        missing = [k for k in required if k not in values]
        if missing:
            raise MapError(f"missing key {missing[0]!r}", path, number)
        rules.append(MapRule(values, number))
    return rules


def read_map(path: str, keys: Iterable[str], required: Iterable[str] = ()) -> list[MapRule]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(f"cannot read map: {exc}", path) from None
    return parse_map_text(text, path, keys, required)
