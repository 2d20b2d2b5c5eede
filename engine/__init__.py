"""pmengine: a sharded, numpy-vectorised NetFlow/IPFIX/sFlow collector in the pmacct family."""

__version__ = "0.1.0"
