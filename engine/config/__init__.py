"""Configuration: pmacct-syntax files and command-line switches -> the typed tree (tree.py).

    from engine.config import load_config, ConfigError, PMACCT_SWITCHES
    cfg = load_config("conf/pmengine.conf", overrides=[("nfacctd_port", "2101")])
"""
from engine.config.keys import KEYS, PMACCT_FLAG_SWITCHES, PMACCT_SWITCHES
from engine.config.parser import (
    ConfigError, check_config, describe_config, load_config, loads_config,
)
from engine.config.tree import Config, CoreConfig, Listener, PluginConfig

__all__ = [
    "Config", "ConfigError", "CoreConfig", "KEYS", "Listener", "PMACCT_FLAG_SWITCHES", "PMACCT_SWITCHES",
    "PluginConfig", "check_config", "describe_config", "load_config", "loads_config",
]
