"""sfacctd_counter_file: sFlow counter samples written as JSON lines, as sfacctd 1.7.7 writes them.

Lines: a `log_init` line the first time a datagram of an (agent, sub-agent) is seen (flow-only agents
too, as sfacctd), then one `log` line per counter record: seq, timestamp, peer_ip_src, event_type,
source_id_index, sflow_seq, sflow_cnt_seq, and for generic / Ethernet / VLAN records sf_cnt_type and
the counters.  Each shard appends whole lines with
one write() on an O_APPEND descriptor, so several shards share one file without tearing lines;
`seq` counts the lines written by this shard (sfacctd: by its one process), so with `--shards N` a
seq is unique per shard, not across the file; each shard writes log_init for the agents it sees.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Optional

from ..decoders.sflow import agent_text
from ..decoders.sflow_counters import AgentSeen


def _now_text() -> str:
    return datetime.fromtimestamp(time.time()).strftime("%Y-%m-%d %H:%M:%S.%f")


class CounterFileWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.seq = 0
        self.seen: set[tuple[bytes, int]] = set()
        self.fd: Optional[int] = None
        self.errors = 0

    def lines(self, events: list) -> list[str]:
        out = []
        now = _now_text()
        for e in events:
            agent = agent_text(e.agent)
            if (e.agent, e.sub_agent) not in self.seen:
                self.seen.add((e.agent, e.sub_agent))
                out.append(json.dumps({"seq": self.seq, "timestamp": now, "peer_src_ip": agent,
                                       "event_type": "log_init"}))
                self.seq += 1
            if isinstance(e, AgentSeen):
                continue
            d = {"seq": self.seq, "timestamp": now, "peer_ip_src": agent, "event_type": "log",
                 "source_id_index": e.source_id_index, "sflow_seq": e.sflow_seq, "sflow_cnt_seq": e.sflow_cnt_seq}
            if e.cnt_type is not None:
                d["sf_cnt_type"] = e.cnt_type
                d.update(e.values)
            out.append(json.dumps(d))
            self.seq += 1
        return out

    def write(self, events: list) -> None:
        if not events:
            return
        data = "".join(line + "\n" for line in self.lines(events)).encode()
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self.fd, data)
        except OSError:
            self.errors += 1

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
