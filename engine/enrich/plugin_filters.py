"""A plugin's filters: pre_tag_filter, pre_tag2_filter, pre_tag_label_filter, aggregate_filter.

    filters = PluginFilters.from_plugin(plugin)      # None-free: an absent filter passes everything
    kept = filters.apply(records, counters)          # records this plugin aggregates

Evaluated in the plugin process on whole batches; what a filter drops is counted per filter
(counters "filtered_<key>").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config.tree import PluginConfig
from ..filters import Node, evaluate, parse_filter
from .tagfilter import LabelFilter, TagFilter, label_filter_mask, parse_label_filter, parse_tag_filter, \
    tag_filter_mask


@dataclass(frozen=True)
class PluginFilters:
    tag: Optional[TagFilter] = None
    tag2: Optional[TagFilter] = None
    label: Optional[LabelFilter] = None
    expression: Optional[Node] = None

    @classmethod
    def from_plugin(cls, plugin: PluginConfig) -> "PluginFilters":
        return cls(parse_tag_filter(plugin.pre_tag_filter) if plugin.pre_tag_filter else None,
                   parse_tag_filter(plugin.pre_tag2_filter) if plugin.pre_tag2_filter else None,
                   parse_label_filter(plugin.pre_tag_label_filter) if plugin.pre_tag_label_filter else None,
                   parse_filter(plugin.aggregate_filter) if plugin.aggregate_filter else None)

    @property
    def active(self) -> bool:
        return any(f is not None for f in (self.tag, self.tag2, self.label, self.expression))

    def apply(self, records: np.ndarray, counters: dict) -> np.ndarray:
        if not self.active or len(records) == 0:
            return records
        steps = (("pre_tag_filter", self.tag and (lambda r: tag_filter_mask(self.tag, r["tag"]))),
                 ("pre_tag2_filter", self.tag2 and (lambda r: tag_filter_mask(self.tag2, r["tag2"]))),
                 ("pre_tag_label_filter", self.label and (lambda r: label_filter_mask(self.label, r["label"]))),
                 ("aggregate_filter", self.expression is not None and (lambda r: evaluate(self.expression, r))))
        for name, mask_of in steps:
            if not mask_of or len(records) == 0:
                continue
            mask = mask_of(records)
            dropped = int(len(mask) - np.count_nonzero(mask))
            if dropped:
                counters[f"filtered_{name}"] = counters.get(f"filtered_{name}", 0) + dropped
                records = records[mask]
        return records
