"""Value parsers and formatters for configuration keys, and the `Key` row type of the key table.

Value parsers are pure functions `text -> value` that raise ValueError with a
message saying what is wrong with the value; the config parser adds key and
line.  Formatters turn a parsed value back into text that parses to it (for
`--check`'s effective configuration).  The table itself is engine/config/keys.py.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

GLOBAL = "global"
PLUGIN = "plugin"


# --------------------------------------------------------------------------- value parsers

def parse_bool(text: str) -> bool:
    """pmacct booleans: true | false (case-insensitive; 1/0/yes are rejected, as nfacctd does)."""
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise ValueError(f"bad boolean {text!r} (expected true or false)")


def _digits(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,20}", text):
        raise ValueError(f"bad integer {text!r}")
    return int(text)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A parser for decimal integers in [low, high] (no sign, no unit suffix, as pmacct)."""
    def parse_int(text: str) -> int:
        value = _digits(text)
        if not low <= value <= high:
            raise ValueError(f"bad value {text!r}: must be in the range {low}-{high}")
        return value
    return parse_int


positive_int = int_range(1, 2**63 - 1)
socket_bytes = int_range(1, 2**31 - 1)      # SO_RCVBUF is a C int


def parse_port(text: str) -> int:
    """A UDP port 0..65535 (0: let the kernel pick one, for tests)."""
    value = _digits(text)
    if value > 65535:
        raise ValueError(f"bad port {text!r}: must be in the range 0-65535")
    return value


def parse_ip(text: str) -> str:
    """An IPv4 or IPv6 address, returned in canonical text form."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"bad IP address {text!r}") from None


def parse_text(text: str) -> str:
    """Any non-empty text (paths: kept as written, strftime and $vars included)."""
    return text


def parse_latest_file(text: str) -> str:
    """print_latest_file: a path; pmacct forbids time-based (%) variables in it."""
    if "%" in text:
        raise ValueError(f"bad value {text!r}: time-based variables (%) are not allowed")
    return text


PRINT_OUTPUTS = ("formatted", "csv", "json")
PRINT_OUTPUTS_NOT_YET = ("event_formatted", "event_csv", "avro", "avro_json", "custom")


def output_parser(key: str, supported: tuple[str, ...], not_yet: tuple[str, ...]) -> Callable[[str], str]:
    """A parser for an output-format key: one of `supported` (case-insensitive); pmacct's other formats
    (`not_yet`) are refused as not implemented yet, anything else as a bad value."""
    def parse_output(text: str) -> str:
        low = text.lower()
        if low in supported:
            return low
        if low in not_yet:
            raise ValueError(f"{key} {low!r} is not implemented yet (supported: {', '.join(supported)})")
        raise ValueError(f"bad {key} {text!r} (expected one of: {', '.join(supported)})")
    return parse_output


parse_print_output = output_parser("print_output", PRINT_OUTPUTS, PRINT_OUTPUTS_NOT_YET)


def parse_separator(text: str) -> str:
    r"""One character, or the escapes \t (tab) and \s (space)."""
    escapes = {"\\t": "\t", "\\s": " "}
    if text in escapes:
        return escapes[text]
    if len(text) != 1:
        raise ValueError(f"bad separator {text!r}: one character, \\t or \\s expected")
    return text


HISTORY_UNIT_SECS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400}


def parse_history(text: str) -> tuple[str, int]:
    """print_history: N[s|m|h|d|w|M] -> (as written, seconds).

    A bare number is seconds; seconds must be whole minutes (pmacct's finest
    bin is one minute).  Months are calendar months: the plugin aligns them
    with the text; the seconds are a nominal 30 days per month.
    """
    match = re.fullmatch(r"([0-9]{1,9})([smhdwM]?)", text)
    if not match:
        raise ValueError(f"bad history period {text!r} (expected N followed by one of s, m, h, d, w, M)")
    count, unit = int(match.group(1)), match.group(2) or "s"
    if count <= 0:
        raise ValueError(f"bad history period {text!r}: must be greater than 0")
    if unit == "s":
        if count % 60:
            raise ValueError(f"bad history period {text!r}: seconds must be a whole number of minutes")
        return text, count
    return text, count * HISTORY_UNIT_SECS[unit]


def parse_roundoff(text: str) -> str:
    """print_history_roundoff: a subset of m, h, d, w, M ('w' excludes 'd' and 'M')."""
    letters = text.replace(",", "").replace(" ", "")
    bad = sorted(set(letters) - set("mhdwM"))
    if not letters or bad:
        raise ValueError(f"bad roundoff {text!r} (expected letters among m, h, d, w, M)")
    if "w" in letters and ("d" in letters or "M" in letters):
        raise ValueError(f"bad roundoff {text!r}: 'w' cannot be combined with 'd' or 'M'")
    return "".join(ch for ch in "mhdwM" if ch in letters)


# --------------------------------------------------------------------------- value formatters (for describe)

def format_bool(value: bool) -> str:
    return "true" if value else "false"


def format_separator(value: str) -> str:
    return {"\t": "\\t", " ": "\\s"}.get(value, value)


def format_list(value) -> str:
    return ", ".join(value)


def format_plugins(value) -> str:
    return ", ".join(f"{kind}[{name}]" for kind, name in value)


# --------------------------------------------------------------------------- the row type

@dataclass(frozen=True)
class Key:
    name: str                              # pmacct key, lower case
    parse: Callable[[str], Any]            # value text -> value (raises ValueError)
    scope: str                             # GLOBAL (core) or PLUGIN (may be `key[name]`)
    default: Any                           # value when the key is not set anywhere
    target: tuple[str, ...]                # tree fields: "core.x", "listener.x", "sflow_listener.x", "plugin.x",
                                           # "options.x" (the plugin type's options object), or "plugins"
    plugin_types: Optional[tuple[str, ...]] = None   # plugin keys: types they apply to (None: all)
    format: Callable[[Any], str] = str     # value -> text that parses back to it
    doc: str = ""


def parse_umask(text: str) -> int:
    """files_umask: an octal mask such as 077 or 0027; it must keep others from writing (pmacct: >= 002)."""
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueError(f"bad umask {text!r} (expected three octal digits, e.g. 077)")
    value = int(text, 8)
    if not value & 0o002:
        raise ValueError(f"bad umask {text!r}: files writable by others are not allowed (the mask must include 002)")
    return value


def format_umask(value: int) -> str:
    return f"{value:03o}"
