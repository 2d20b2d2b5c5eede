"""The typed configuration tree: what `parse_config` produces, what every process receives.

It is plain, picklable dataclasses: the supervisor parses the file once and
hands these objects to shard and plugin processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Listener:
    """One UDP listen socket set shared by a group of shards."""
    protocol: str = "netflow"       # "netflow" (v5/v9/IPFIX) or "sflow" (v5)
    ip: str = "::"                  # nfacctd_ip / sfacctd_ip; "::" is dual-stack (v4 arrives IPv4-mapped)
    port: int = 2100                # nfacctd_port / sfacctd_port
    ipv6_only: bool = False         # nfacctd_ipv6_only / sfacctd_ipv6_only
    rcvbuf: Optional[int] = None    # nfacctd_pipe_size / sfacctd_pipe_size: socket receive buffer, bytes
    renormalize: bool = False       # nfacctd_renormalize / sfacctd_renormalize


def worker_label(plugin: str, worker: int, workers: int) -> str:
    """How logs, stats and child names call one process of a plugin: its name, or NAME.wK (plugin_workers)."""
    return plugin if workers <= 1 else f"{plugin}.w{worker}"


@dataclass
class PluginConfig:
    name: str                       # the name in `plugins: print[name]` ("default" when unnamed)
    type: str                       # "print" (later: "memory", "pgsql", "kafka")
    aggregate: tuple[str, ...] = ("src_host", "dst_host")   # validated primitive names, in config order
    pipe_size: int = 32 * 1024 * 1024      # plugin_pipe_size: ring bytes per (shard, plugin): 135k records
                                           # (with plugin_workers, split among the workers' rings)
    buffer_size: int = 64 * 1024           # plugin_buffer_size: accepted, used as the batch hint
    refresh_time: int = 60                 # print_refresh_time, seconds
    history: Optional[str] = None          # print_history as written: "5m", "1h", "1d", "1w", "1M"
    history_secs: int = 0                  # print_history in seconds (0: no history bins; months: see history)
    history_roundoff: str = ""             # print_history_roundoff: subset of "mhdwM"
    output: str = "formatted"              # print_output: formatted | csv | json
    output_file: Optional[str] = None      # print_output_file (strftime vars, $peer_src_ip); None: stdout
    output_file_append: bool = False       # print_output_file_append
    output_separator: str = ","            # print_output_separator (csv)
    markers: bool = False                  # print_markers
    num_protos: bool = False               # print_num_protos
    latest_file: Optional[str] = None      # print_latest_file
    write_empty_file: bool = False         # print_write_empty_file
    timestamps_since_epoch: bool = False
    timestamps_utc: bool = False
    timestamps_secs: bool = False
    extra: dict = field(default_factory=dict)   # other keys of this plugin, parsed, for plugin types added later
    options: Any = None                    # the type's own typed options (keys_memory.MemoryOptions, ...), or None
    aggregate_filter: Optional[str] = None       # libpcap expression (checked at parse time), as written
    pre_tag_filter: Optional[str] = None         # tag filter: N, A-B, -N, comma lists
    pre_tag2_filter: Optional[str] = None
    pre_tag_label_filter: Optional[str] = None   # label list, `null`, -label
    networks_file: Optional[str] = None    # networks_file (engine/enrich/networks.py)
    networks_file_filter: bool = False     # networks_file_filter
    networks_file_no_lpm: bool = False     # networks_file_no_lpm
    networks_mask: Optional[int] = None    # networks_mask (nfacctd_net: mask)
    networks_cache_entries: Optional[int] = None   # networks_cache_entries: accepted, no cache needed
    workers: int = 1                       # plugin_workers: aggregating processes, each owns a hash share of the keys
    worker: int = 0                        # which of them this process is (set by the supervisor, not a key)

    @property
    def label(self) -> str:
        return worker_label(self.name, self.worker, self.workers)


@dataclass
class CoreConfig:
    daemonize: bool = False
    logfile: Optional[str] = None
    pidfile: Optional[str] = None
    debug: bool = False
    listeners: list[Listener] = field(default_factory=lambda: [Listener()])
    time_new: bool = False                 # nfacctd_time_new: bin by arrival time, not flow time
    time_secs: bool = False                # nfacctd_time_secs: v9/IPFIX uptime fields are seconds
    templates_file: Optional[str] = None   # nfacctd_templates_file
    pcap_savefile: Optional[str] = None    # pcap_savefile / -I: read this file instead of a socket
    pcap_savefile_wait: bool = False       # keep running after the file is read
    files_umask: int = 0o077               # files_umask: mask of files, folders and sockets we create
    counter_file: Optional[str] = None     # sfacctd_counter_file: sFlow counter samples as JSON lines
    counter_output: str = "json"           # sfacctd_counter_output
    sampling_map: Optional[str] = None     # sampling_map file
    maps_refresh: bool = True              # maps_refresh: reload maps on SIGUSR2
    pre_tag_map: Optional[str] = None      # pre_tag_map file (loaded and checked at parse time)
    net_source: Optional[str] = None       # nfacctd_net: flow | file | mask | longest (None: not set, flow)
    as_source: Optional[str] = None        # nfacctd_as: flow | file | longest (None: not set, flow)
    sflow_net_source: Optional[str] = None # sfacctd_net (used where nfacctd_net is not set)
    sflow_as_source: Optional[str] = None  # sfacctd_as (used where nfacctd_as is not set)
    use_ip_next_hop: bool = False          # use_ip_next_hop
    allow_file: Optional[str] = None       # nfacctd_allow_file (the NetFlow listener)
    sflow_allow_file: Optional[str] = None # sfacctd_allow_file (the sFlow listener)
    prometheus_listen: Any = None          # keys_ops.ListenAddress: the Prometheus endpoint (None: off)

    def listener(self, protocol: str) -> Optional[Listener]:
        return next((x for x in self.listeners if x.protocol == protocol), None)


@dataclass
class Config:
    core: CoreConfig
    plugins: list[PluginConfig]
    source: Optional[str] = None           # the file it came from, for messages
