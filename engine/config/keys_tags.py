"""Key table section: pre_tag_map, pre_tag_filter / pre_tag2_filter / pre_tag_label_filter, aggregate_filter."""
from __future__ import annotations

from engine.config.values import Key

TAGS_KEYS: tuple[Key, ...] = ()
