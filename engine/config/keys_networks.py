"""Key table section: networks_file, nfacctd_net / sfacctd_net, nfacctd_as / sfacctd_as, use_ip_next_hop, allow files."""
from __future__ import annotations

from engine.config.values import Key

NETWORKS_KEYS: tuple[Key, ...] = ()
