"""pmacct-syntax configuration -> the typed tree (engine/config/tree.py), validated once.

Syntax (as nfacctd): `key: value` lines, `key[plugin]: value` to scope a value
to one plugin, lines starting with `!` are comments, blank lines are skipped,
keys are case-insensitive.  Every key is looked up in the one table
(engine/config/keys.py); anything it does not know is an error naming the key
and the line.

Precedence, lowest first: defaults < file (unscoped) < file (scoped) <
command line (unscoped) < command line (scoped); within one level the last
occurrence wins.  (nfacctd instead lets a later unscoped line overwrite an
earlier scoped one; pmengine makes the scoped value win wherever it is.)
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from engine.config.keys import (
    CONFIG_FILE_KEY, GLOBAL, KEY_TABLE, KEYS, PLUGIN_OPTIONS, PMACCT_KEYS, Key,
)
from engine.config.keys_sflow import NETFLOW_LISTENER_KEYS, SFLOW_LISTENER_KEYS
from engine.config.tree import Config, CoreConfig, Listener, PluginConfig, worker_label


class ConfigError(Exception):
    """A configuration problem; names the key and the line when there is one.

    path is None for values that came from the command line.
    """

    def __init__(self, message: str, key: Optional[str] = None, line: Optional[int] = None,
                 path: Optional[str] = None):
        self.message = message
        self.key = key
        self.line = line
        self.path = path
        super().__init__(str(self))

    def __reduce__(self):
        return ConfigError, (self.message, self.key, self.line, self.path)

    def __str__(self) -> str:
        where = self.path if self.path is not None else "command line"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.key and not self.message.startswith(f"key '{self.key}'"):
            return f"{where}: key '{self.key}': {self.message}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Setting:
    """One `key[plugin]: value` occurrence, its value already parsed."""
    key: Key
    plugin: Optional[str]          # the [name] scope, None when unscoped
    value: Any
    line: Optional[int]            # None: command line
    path: Optional[str]            # None: command line
    order: int                     # position, for "last one wins"

    @property
    def from_command_line(self) -> bool:
        return self.line is None and self.path is None

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.key.name, self.line, self.path)


_KEY_SYNTAX = re.compile(r"([A-Za-z0-9_]+)\s*(?:\[\s*([^\]]*?)\s*\])?")


def _lookup_key(raw_key: str, line: Optional[int], path: Optional[str]) -> tuple[Key, Optional[str]]:
    """`name` or `name[plugin]` -> (table row, plugin scope); unknown keys are errors."""
    match = _KEY_SYNTAX.fullmatch(raw_key)
    if not match:
        raise ConfigError(f"malformed key {raw_key!r} (expected name or name[plugin])", None, line, path)
    name, plugin = match.group(1).lower(), match.group(2)
    if plugin == "":
        raise ConfigError("empty plugin name in []", name, line, path)
    key = KEYS.get(name)
    if key is None:
        if name == CONFIG_FILE_KEY:
            raise ConfigError(f"key '{name}' is the -f command-line switch; it cannot be set in a file",
                              name, line, path)
        if name in PMACCT_KEYS:
            raise ConfigError(f"key '{name}' is a pmacct key that pmengine does not implement yet",
                              name, line, path)
        hint = difflib.get_close_matches(name, list(KEYS), n=1, cutoff=0.75)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"unknown configuration key{suffix}", name, line, path)
    if plugin is not None and key.scope == GLOBAL:
        raise ConfigError(f"key '{name}' is global: it cannot be scoped to plugin '{plugin}'",
                          name, line, path)
    return key, plugin


def _make_setting(raw_key: str, text: str, line: Optional[int], path: Optional[str], order: int) -> Setting:
    key, plugin = _lookup_key(raw_key.strip(), line, path)
    text = text.strip()
    if not text:
        raise ConfigError("missing value", key.name, line, path)
    try:
        value = key.parse(text)
    except ValueError as exc:
        raise ConfigError(str(exc), key.name, line, path) from None
    return Setting(key, plugin, value, line, path, order)


def read_settings(text: str, path: Optional[str] = None) -> list[Setting]:
    """Parse configuration text line by line into settings (syntax, keys and values checked)."""
    settings: list[Setting] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        if ":" not in line:
            raise ConfigError("syntax error: missing ':' (expected key: value)", None, number, path or "<text>")
        raw_key, value = line.split(":", 1)
        settings.append(_make_setting(raw_key, value, number, path or "<text>", len(settings)))
    return settings


def override_settings(overrides: Iterable[tuple[str, str]], start: int = 0) -> list[Setting]:
    """Command-line (key, value) pairs -> settings; keys may be scoped as `key[plugin]`."""
    return [_make_setting(k, str(v), None, None, start + i) for i, (k, v) in enumerate(overrides)]


def _winner(candidates: list[Setting]) -> Optional[Setting]:
    """The setting that takes effect: command line over file, scoped over unscoped, then the last."""
    if not candidates:
        return None
    return max(candidates, key=lambda s: (s.from_command_line, s.plugin is not None, s.order))


def _assign(key: Key, value: Any, targets: dict[str, Any]) -> None:
    values = value if len(key.target) > 1 else (value,)
    for target, item in zip(key.target, values):
        section, attr = target.split(".")
        setattr(targets[section], attr, item)


def build_config(settings: list[Setting], source: Optional[str] = None) -> Config:
    """Resolve defaults, scoping and precedence into one validated Config."""
    by_key: dict[str, list[Setting]] = {}
    for setting in settings:
        by_key.setdefault(setting.key.name, []).append(setting)

    plugins_setting = _winner(by_key.get("plugins", []))
    declared = plugins_setting.value if plugins_setting else KEYS["plugins"].default
    names = {name: kind for kind, name in declared}
    for setting in settings:
        if setting.plugin is not None:
            if setting.plugin not in names:
                raise setting.error(f"plugin '{setting.plugin}' is not declared in 'plugins'")
            types = setting.key.plugin_types
            if types is not None and names[setting.plugin] not in types:
                raise setting.error(f"does not apply to {names[setting.plugin]} plugin '{setting.plugin}'")

    core, listener, sflow_listener = CoreConfig(), Listener(), Listener(protocol="sflow", port=6343)
    chosen: dict[tuple[Optional[str], str], Optional[Setting]] = {}
    for key in KEY_TABLE:
        if key.scope == GLOBAL and key.name != "plugins":
            won = chosen[(None, key.name)] = _winner(by_key.get(key.name, []))
            _assign(key, won.value if won else key.default,
                    {"core": core, "listener": listener, "sflow_listener": sflow_listener})

    plugins: list[PluginConfig] = []
    for kind, name in declared:
        plugin = PluginConfig(name=name, type=kind)
        if kind in PLUGIN_OPTIONS:
            plugin.options = PLUGIN_OPTIONS[kind]()
        for key in KEY_TABLE:
            if key.scope == GLOBAL or (key.plugin_types is not None and kind not in key.plugin_types):
                continue
            candidates = [s for s in by_key.get(key.name, []) if s.plugin in (None, name)]
            won = chosen[(name, key.name)] = _winner(candidates)
            _assign(key, won.value if won else key.default, {"plugin": plugin, "options": plugin.options})
        plugins.append(plugin)

    wants_sflow = any(chosen[(None, k)] is not None for k in SFLOW_LISTENER_KEYS)
    wants_netflow = any(chosen[(None, k)] is not None for k in NETFLOW_LISTENER_KEYS) or not wants_sflow
    core.listeners = ([listener] if wants_netflow else []) + ([sflow_listener] if wants_sflow else [])
    for lst in core.listeners:
        _check_listener(lst, chosen)
    if len(core.listeners) == 2 and (listener.port == sflow_listener.port and listener.port != 0):
        setting = chosen[(None, "sfacctd_port")] or chosen[(None, "nfacctd_port")]
        raise setting.error(f"nfacctd_port and sfacctd_port are both {listener.port}")
    _check_sampling_map(core, chosen)
    for plugin in plugins:
        _check_plugin(plugin, chosen)
    _check_labels(plugins, chosen)
    return Config(core=core, plugins=plugins, source=source)


def _check_listener(listener: Listener, chosen: dict) -> None:
    prefix = "sfacctd" if listener.protocol == "sflow" else "nfacctd"
    if listener.ipv6_only and ipaddress.ip_address(listener.ip).version == 4:
        setting = chosen[(None, f"{prefix}_ipv6_only")] or chosen[(None, f"{prefix}_ip")]
        raise setting.error(f"{prefix}_ipv6_only needs an IPv6 {prefix}_ip, not {listener.ip}")


def _check_sampling_map(core: CoreConfig, chosen: dict) -> None:
    """A sampling_map that does not load is a configuration error naming the map's file and line."""
    if not core.sampling_map:
        return
    from engine.maps import MapError
    from engine.maps.sampling import load_sampling_map
    try:
        load_sampling_map(core.sampling_map)
    except MapError as exc:
        raise chosen[(None, "sampling_map")].error(str(exc)) from None


def _check_plugin(plugin: PluginConfig, chosen: dict) -> None:
    validate = getattr(plugin.options, "validate", None)
    if validate is not None:
        problem = validate(plugin)          # None, or (key name, message) of a combination that cannot work
        if problem is not None:
            name, message = problem
            setting = chosen.get((plugin.name, name))
            if setting is None:
                raise ConfigError(f"plugin '{plugin.name}': {message}", name)
            raise setting.error(f"plugin '{plugin.name}': {message}")
    if plugin.workers > 1 and plugin.type == "memory":
        raise chosen[(plugin.name, "plugin_workers")].error(
            f"plugin '{plugin.name}': the memory plugin serves queries from one table: plugin_workers must be 1")
    if plugin.buffer_size > plugin.pipe_size:
        setting = chosen[(plugin.name, "plugin_buffer_size")] or chosen[(plugin.name, "plugin_pipe_size")]
        raise setting.error(f"plugin '{plugin.name}': plugin_buffer_size ({plugin.buffer_size}) must not "
                            f"exceed plugin_pipe_size ({plugin.pipe_size})")


def _check_labels(plugins: list[PluginConfig], chosen: dict) -> None:
    """Every plugin process has its own label (logs, stats file, child name): a plugin named like another's
    worker (`print[a.w1]` beside `print[a]` with plugin_workers 2) would share it."""
    names = {p.name for p in plugins}
    for plugin in plugins:
        if plugin.workers <= 1:
            continue
        for k in range(plugin.workers):
            label = worker_label(plugin.name, k, plugin.workers)
            if label in names:
                raise chosen[(plugin.name, "plugin_workers")].error(
                    f"plugin '{plugin.name}': its worker {k} is called '{label}', which is also a plugin's "
                    f"name: rename that plugin")


def _read_file(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc.strerror or exc}", path=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", line=line, path=path) from None


def load_config(path: Optional[str], overrides: Iterable[tuple[str, str]] = ()) -> Config:
    """Read `path` (None: defaults only), apply command-line overrides, validate, return the tree.

    An override ("config_file", p) (pmacct's -f) names the file when path is None.
    """
    overrides = list(overrides)
    for key, value in overrides:
        if key.strip().lower() == CONFIG_FILE_KEY:
            if path is not None and path != value:
                raise ConfigError(f"two configuration files given: {path!r} and {value!r}", CONFIG_FILE_KEY)
            path = value
    overrides = [(k, v) for k, v in overrides if k.strip().lower() != CONFIG_FILE_KEY]
    settings = read_settings(_read_file(path), path) if path is not None else []
    settings += override_settings(overrides, start=len(settings))
    return build_config(settings, source=path)


def loads_config(text: str, overrides: Iterable[tuple[str, str]] = (), source: str = "<text>") -> Config:
    """Like load_config, from configuration text (messages name `source`)."""
    settings = read_settings(text, source)
    settings += override_settings(overrides, start=len(settings))
    return build_config(settings, source=source)


def _tree_value(key: Key, sections: dict[str, Any]) -> Any:
    values = tuple(getattr(sections[t.split(".")[0]], t.split(".")[1]) for t in key.target)
    return values if len(values) > 1 else values[0]


def describe_config(cfg: Config) -> str:
    """The effective configuration in pmacct syntax (every key, plugin keys scoped).

    Loading the text back gives an equal tree (source aside): what `--check` prints.
    """
    lines = [f"! pmengine effective configuration, from {cfg.source or 'defaults'}"]
    netflow, sflow = cfg.core.listener("netflow"), cfg.core.listener("sflow")
    global_sections = {"core": cfg.core, "listener": netflow or Listener(),
                       "sflow_listener": sflow or Listener(protocol="sflow", port=6343)}
    for key in KEY_TABLE:
        section = key.target[0].split(".")[0]
        if key.name == "plugins":
            lines.append(f"plugins: {key.format(tuple((p.type, p.name) for p in cfg.plugins))}")
        elif key.scope == GLOBAL and not ((section == "listener" and netflow is None)
                                          or (section == "sflow_listener" and sflow is None)):
            _describe_line(lines, key, key.name, _tree_value(key, global_sections))
    for plugin in cfg.plugins:
        lines.append("!")
        for key in KEY_TABLE:
            if key.scope == GLOBAL or (key.plugin_types is not None and plugin.type not in key.plugin_types):
                continue
            _describe_line(lines, key, f"{key.name}[{plugin.name}]",
                           _tree_value(key, {"plugin": plugin, "options": plugin.options}))
    return "\n".join(lines) + "\n"


def _describe_line(lines: list[str], key: Key, label: str, value: Any) -> None:
    first = value[0] if len(key.target) > 1 else value
    if first is not None and first != "":
        lines.append(f"{label}: {key.format(value)}")


def check_config(path: Optional[str], overrides: Iterable[tuple[str, str]] = ()) -> tuple[int, str]:
    """For `--check`: (0, effective configuration text) or (1, the error message)."""
    try:
        return 0, describe_config(load_config(path, overrides))
    except ConfigError as exc:
        return 1, str(exc)
