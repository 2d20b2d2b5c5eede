"""Flow filter expressions (libpcap syntax): parser → ast dataclasses → numpy evaluation over batches.

    tree = parse_filter("src net 10.0.0.0/8 and not port 53")   # raises FilterError
    mask = evaluate(tree, records)                              # bool per record
"""
from .ast import Node
from .evaluate import evaluate
from .parser import FilterError, parse_filter

__all__ = ["Node", "FilterError", "evaluate", "parse_filter"]
