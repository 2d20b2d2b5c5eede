"""THE one table of pmacct configuration keys that pmengine understands.

Each `Key` row says: the pmacct name, how its value text is parsed, whether it
is global or may be scoped to a plugin (`key[name]: value`), its default, and
which field(s) of the typed tree (engine/config/tree.py) it fills.  The parser
(engine/config/parser.py) is generic over this table; nothing else in the
package knows pmacct key names.

The table is assembled here from sections: core and print keys below, and one
module per plugin type / listener (keys_sflow, keys_memory, keys_sql,
keys_kafka), each holding its rows beside the dataclass of typed options its
keys fill.  Value parsers and the `Key` row type are in engine/config/values.py.

Also here: every key that pmacct 1.7.7 documents (CONFIG-KEYS), every
aggregation primitive and plugin type it has, so that "pmacct has it, we do
not yet" is told apart from a typo.
"""
from __future__ import annotations

import re

from engine.config.values import (  # noqa: F401  (re-exported: the table's vocabulary)
    GLOBAL, PLUGIN, PRINT_OUTPUTS, PRINT_OUTPUTS_NOT_YET, Key, format_bool, format_list, format_plugins,
    format_separator, int_range, parse_bool, parse_history, parse_ip, parse_latest_file, parse_port,
    parse_print_output, parse_roundoff, parse_separator, parse_text, parse_umask, format_umask, positive_int,
    socket_bytes,
)
from engine.config.keys_kafka import KAFKA_KEYS, KafkaOptions
from engine.config.keys_memory import MEMORY_KEYS, MemoryOptions
from engine.config.keys_networks import NETWORKS_KEYS
from engine.config.keys_ops import OPS_KEYS
from engine.config.keys_sflow import SFLOW_KEYS
from engine.config.keys_sql import SQL_KEYS, SqlOptions
from engine.config.keys_tags import TAGS_KEYS
from engine.schema import PRIMITIVES


# pmacct primitives that select a counter, not a key: `aggregate: flows` adds the FLOWS column.
COUNTER_PRIMITIVES = ("flows",)


def parse_aggregate(text: str) -> tuple[str, ...]:
    """`a, b, c` -> validated primitive names in config order (repeats dropped).

    Valid: engine.schema.PRIMITIVES and COUNTER_PRIMITIVES.
    """
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            raise ValueError(f"empty primitive in {text!r}")
        if name not in PRIMITIVES and name not in COUNTER_PRIMITIVES:
            if name in PMACCT_PRIMITIVES:
                raise ValueError(f"primitive {name!r} is not implemented yet")
            raise ValueError(f"unknown primitive {name!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


PLUGIN_TYPES = ("print", "memory", "pgsql", "kafka")
PLUGIN_TYPES_NOT_YET = ("mysql", "sqlite3", "amqp", "nfprobe", "sfprobe", "tee")
DEFAULT_PLUGIN_NAME = "default"
_PLUGIN_ITEM = re.compile(r"([A-Za-z0-9_]+)\s*(?:\[\s*([^\]]*?)\s*\])?")
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_plugins(text: str) -> tuple[tuple[str, str], ...]:
    """`print[a], print[b]` -> ((type, name), ...); unnamed plugins are named 'default'."""
    plugins: list[tuple[str, str]] = []
    for raw in text.split(","):
        item = raw.strip()
        match = _PLUGIN_ITEM.fullmatch(item)
        if not match:
            raise ValueError(f"bad plugin declaration {item!r} (expected type or type[name])")
        kind, name = match.group(1).lower(), match.group(2)
        if name is None:
            name = DEFAULT_PLUGIN_NAME
        elif not _PLUGIN_NAME.fullmatch(name):
            raise ValueError(f"bad plugin name {name!r} in {item!r}")
        if kind in PLUGIN_TYPES_NOT_YET:
            raise ValueError(f"plugin type {kind!r} is not implemented yet")
        if kind not in PLUGIN_TYPES:
            raise ValueError(f"unknown plugin type {kind!r}")
        if any(name == seen for _, seen in plugins):
            raise ValueError(f"duplicate plugin name {name!r}")
        plugins.append((kind, name))
    return tuple(plugins)


# --------------------------------------------------------------------------- the table

_PRINT = ("print",)

CORE_AND_PRINT_KEYS: tuple[Key, ...] = (
    # core
    Key("daemonize", parse_bool, GLOBAL, False, ("core.daemonize",), format=format_bool),
    Key("logfile", parse_text, GLOBAL, None, ("core.logfile",)),
    Key("pidfile", parse_text, GLOBAL, None, ("core.pidfile",)),
    Key("debug", parse_bool, GLOBAL, False, ("core.debug",), format=format_bool,
        doc="pmacct allows debug per plugin; pmengine has one process-wide switch"),
    Key("nfacctd_time_new", parse_bool, GLOBAL, False, ("core.time_new",), format=format_bool),
    Key("nfacctd_time_secs", parse_bool, GLOBAL, False, ("core.time_secs",), format=format_bool),
    Key("nfacctd_templates_file", parse_text, GLOBAL, None, ("core.templates_file",)),
    Key("pcap_savefile", parse_text, GLOBAL, None, ("core.pcap_savefile",)),
    Key("pcap_savefile_wait", parse_bool, GLOBAL, False, ("core.pcap_savefile_wait",), format=format_bool),
    Key("files_umask", parse_umask, GLOBAL, 0o077, ("core.files_umask",), format=format_umask,
        doc="mode of what pmengine creates: output files, folders, the memory plugin's socket (077: 0600 / 0700)"),
    # the listener
    Key("nfacctd_ip", parse_ip, GLOBAL, "::", ("listener.ip",)),
    Key("nfacctd_port", parse_port, GLOBAL, 2100, ("listener.port",)),
    Key("nfacctd_ipv6_only", parse_bool, GLOBAL, False, ("listener.ipv6_only",), format=format_bool),
    Key("nfacctd_pipe_size", socket_bytes, GLOBAL, None, ("listener.rcvbuf",),
        doc="socket receive buffer, bytes"),
    # plugins
    Key("plugins", parse_plugins, GLOBAL, (("print", DEFAULT_PLUGIN_NAME),), ("plugins",),
        format=format_plugins, doc="pmacct defaults to memory, not implemented yet: pmengine defaults to print"),
    Key("aggregate", parse_aggregate, PLUGIN, ("src_host",), ("plugin.aggregate",), format=format_list,
        doc="pmacct's default is src_host"),
    Key("plugin_pipe_size", positive_int, PLUGIN, 32 * 1024 * 1024, ("plugin.pipe_size",)),
    Key("plugin_buffer_size", positive_int, PLUGIN, 64 * 1024, ("plugin.buffer_size",)),
    Key("timestamps_since_epoch", parse_bool, PLUGIN, False, ("plugin.timestamps_since_epoch",), format=format_bool),
    Key("timestamps_utc", parse_bool, PLUGIN, False, ("plugin.timestamps_utc",), format=format_bool),
    Key("timestamps_secs", parse_bool, PLUGIN, False, ("plugin.timestamps_secs",), format=format_bool),
    # print plugin
    Key("print_output", parse_print_output, PLUGIN, "formatted", ("plugin.output",), _PRINT),
    Key("print_output_file", parse_text, PLUGIN, None, ("plugin.output_file",), _PRINT),
    Key("print_output_file_append", parse_bool, PLUGIN, False, ("plugin.output_file_append",), _PRINT,
        format=format_bool),
    Key("print_output_separator", parse_separator, PLUGIN, ",", ("plugin.output_separator",), _PRINT,
        format=format_separator),
    Key("print_refresh_time", positive_int, PLUGIN, 60, ("plugin.refresh_time",), _PRINT),
    Key("print_history", parse_history, PLUGIN, (None, 0), ("plugin.history", "plugin.history_secs"), _PRINT,
        format=lambda value: value[0]),
    Key("print_history_roundoff", parse_roundoff, PLUGIN, "", ("plugin.history_roundoff",), _PRINT),
    Key("print_markers", parse_bool, PLUGIN, False, ("plugin.markers",), _PRINT, format=format_bool),
    Key("print_num_protos", parse_bool, PLUGIN, False, ("plugin.num_protos",), _PRINT, format=format_bool),
    Key("print_latest_file", parse_latest_file, PLUGIN, None, ("plugin.latest_file",), _PRINT),
    Key("print_write_empty_file", parse_bool, PLUGIN, False, ("plugin.write_empty_file",), _PRINT,
        format=format_bool),
)

# The one table: core, print and the sections of the other plugin types / the sFlow listener, each kept
# beside the typed options it fills (engine/config/keys_*.py).
KEY_TABLE: tuple[Key, ...] = (CORE_AND_PRINT_KEYS + SFLOW_KEYS + NETWORKS_KEYS + TAGS_KEYS + MEMORY_KEYS + SQL_KEYS
                              + KAFKA_KEYS + OPS_KEYS)

# Plugin type -> the dataclass of its own options (PluginConfig.options; keys target "options.<field>").
PLUGIN_OPTIONS: dict[str, type] = {"memory": MemoryOptions, "pgsql": SqlOptions, "kafka": KafkaOptions}

KEYS: dict[str, Key] = {key.name: key for key in KEY_TABLE}

# pmacct command-line switches -> keys.  Flag switches take no argument and set "true".
PMACCT_SWITCHES: dict[str, str] = {
    "-l": "nfacctd_port",           # (sfacctd's -l is sfacctd_port: pass -o sfacctd_port=N instead)
    "-L": "nfacctd_ip",
    "-P": "plugins",
    "-c": "aggregate",
    "-r": "print_refresh_time",     # refresh time of all plugins
    "-I": "pcap_savefile",
    "-W": "pcap_savefile_wait",
    "-D": "daemonize",
    "-d": "debug",
    "-F": "pidfile",
    "-f": "config_file",            # the configuration file itself (load_config's path)
}
PMACCT_FLAG_SWITCHES: frozenset[str] = frozenset({"-D", "-d", "-W"})
CONFIG_FILE_KEY = "config_file"

# --------------------------------------------------------------------------- what pmacct 1.7.7 has

# Every key documented in pmacct 1.7.7 CONFIG-KEYS (plus the spelling of two that the document misspells).
PMACCT_KEYS: frozenset[str] = frozenset("""
aggregate aggregate_filter aggregate_primitives amqp_cache_entries amqp_exchange amqp_exchange_type
amqp_frame_max amqp_heartbeat_interval amqp_history amqp_history_offset amqp_history_roundoff amqp_host
amqp_markers amqp_max_writers amqp_multi_values amqp_num_protos amqp_output amqp_passwd amqp_persistent_msg
amqp_preprocess amqp_preprocess_type amqp_refresh_time amqp_routing_key amqp_routing_key_rr amqp_startup_delay
amqp_trigger_exec amqp_user amqp_vhost avro_buffer_size avro_schema_file bgp_agent_map bgp_aspath_radius
bgp_daemon bgp_daemon_allow_file bgp_daemon_as bgp_daemon_batch bgp_daemon_batch_interval bgp_daemon_id
bgp_daemon_ip bgp_daemon_ipprec bgp_daemon_ipv6_only bgp_daemon_lg bgp_daemon_lg_ip bgp_daemon_lg_passwd
bgp_daemon_lg_port bgp_daemon_lg_threads bgp_daemon_lg_user bgp_daemon_max_peers bgp_daemon_md5_file
bgp_daemon_msglog_amqp_exchange bgp_daemon_msglog_amqp_exchange_type bgp_daemon_msglog_amqp_frame_max
bgp_daemon_msglog_amqp_heartbeat_interval bgp_daemon_msglog_amqp_host bgp_daemon_msglog_amqp_passwd
bgp_daemon_msglog_amqp_persistent_msg bgp_daemon_msglog_amqp_retry bgp_daemon_msglog_amqp_routing_key
bgp_daemon_msglog_amqp_routing_key_rr bgp_daemon_msglog_amqp_user bgp_daemon_msglog_amqp_vhost
bgp_daemon_msglog_avro_schema_file bgp_daemon_msglog_file bgp_daemon_msglog_kafka_avro_schema_registry
bgp_daemon_msglog_kafka_broker_host bgp_daemon_msglog_kafka_broker_port bgp_daemon_msglog_kafka_config_file
bgp_daemon_msglog_kafka_partition bgp_daemon_msglog_kafka_partition_key bgp_daemon_msglog_kafka_retry
bgp_daemon_msglog_kafka_topic bgp_daemon_msglog_kafka_topic_rr bgp_daemon_msglog_output bgp_daemon_pipe_size
bgp_daemon_port bgp_daemon_xconnect_map bgp_disable_router_id_check bgp_extcomm_pattern bgp_follow_default
bgp_follow_nexthop bgp_follow_nexthop_external bgp_lrgcomm_pattern bgp_lrgcomm_pattern_to_asn
bgp_neighbors_file bgp_peer_as_skip_subas bgp_peer_src_as_map bgp_peer_src_as_type bgp_src_as_path_type
bgp_src_ext_comm_type bgp_src_local_pref_map bgp_src_local_pref_type bgp_src_lrg_comm_type bgp_src_med_map
bgp_src_med_type bgp_src_roa_type bgp_src_std_comm_type bgp_stdcomm_pattern bgp_stdcomm_pattern_to_asn
bgp_table_attr_hash_buckets bgp_table_dump_amqp_exchange bgp_table_dump_amqp_exchange_type
bgp_table_dump_amqp_frame_max bgp_table_dump_amqp_heartbeat_interval bgp_table_dump_amqp_host
bgp_table_dump_amqp_passwd bgp_table_dump_amqp_persistent_msg bgp_table_dump_amqp_routing_key
bgp_table_dump_amqp_routing_key_rr bgp_table_dump_amqp_user bgp_table_dump_amqp_vhost
bgp_table_dump_avro_schema_file bgp_table_dump_file bgp_table_dump_kafka_avro_schema_registry
bgp_table_dump_kafka_broker_host bgp_table_dump_kafka_broker_port bgp_table_dump_kafka_config_file
bgp_table_dump_kafka_partition bgp_table_dump_kafka_partition_key bgp_table_dump_kafka_topic
bgp_table_dump_kafka_topic_rr bgp_table_dump_latest_file bgp_table_dump_output bgp_table_dump_refresh_time
bgp_table_dump_workers bgp_table_peer_buckets bgp_table_per_peer_buckets bgp_table_per_peer_hash
bmp_agent_map bmp_daemon bmp_daemon_allow_file bmp_daemon_batch bmp_daemon_batch_interval bmp_daemon_ip
bmp_daemon_ipprec bmp_daemon_ipv6_only bmp_daemon_max_peers bmp_daemon_msglog_amqp_exchange
bmp_daemon_msglog_amqp_exchange_type bmp_daemon_msglog_amqp_frame_max bmp_daemon_msglog_amqp_heartbeat_interval
bmp_daemon_msglog_amqp_host bmp_daemon_msglog_amqp_passwd bmp_daemon_msglog_amqp_persistent_msg
bmp_daemon_msglog_amqp_retry bmp_daemon_msglog_amqp_routing_key bmp_daemon_msglog_amqp_routing_key_rr
bmp_daemon_msglog_amqp_user bmp_daemon_msglog_amqp_vhost bmp_daemon_msglog_avro_schema_file
bmp_daemon_msglog_file bmp_daemon_msglog_kafka_avro_schema_registry bmp_daemon_msglog_kafka_broker_host
bmp_daemon_msglog_kafka_broker_port bmp_daemon_msglog_kafka_config_file bmp_daemon_msglog_kafka_partition
bmp_daemon_msglog_kafka_partition_key bmp_daemon_msglog_kafka_retry bmp_daemon_msglog_kafka_topic
bmp_daemon_msglog_kafka_topic_rr bmp_daemon_msglog_output bmp_daemon_parse_proxy_header bmp_daemon_pipe_size
bmp_daemon_port bmp_dump_amqp_exchange bmp_dump_amqp_exchange_type bmp_dump_amqp_frame_max
bmp_dump_amqp_heartbeat_interval bmp_dump_amqp_host bmp_dump_amqp_passwd bmp_dump_amqp_persistent_msg
bmp_dump_amqp_routing_key bmp_dump_amqp_routing_key_rr bmp_dump_amqp_user bmp_dump_amqp_vhost
bmp_dump_avro_schema_file bmp_dump_file bmp_dump_kafka_avro_schema_registry bmp_dump_kafka_broker_host
bmp_dump_kafka_broker_port bmp_dump_kafka_config_file bmp_dump_kafka_partition bmp_dump_kafka_partition_key
bmp_dump_kafka_topic bmp_dump_kafka_topic_rr bmp_dump_latest_file bmp_dump_output bmp_dump_refresh_time
bmp_dump_workers bmp_table_attr_hash_buckets bmp_table_peer_buckets bmp_table_per_peer_buckets
bmp_table_per_peer_hash classifier_giveup_proto_other classifier_giveup_proto_tcp classifier_giveup_proto_udp
classifier_idle_scan_budget classifier_idle_scan_period classifier_max_flows classifier_num_roots
classifier_proto_guess cluster_id cluster_name core_proc_name daemonize debug debug_internal_msg dtls_path
files_gid files_uid files_umask flow_to_rd_map geoip_ipv4_file geoip_ipv6_file geoipv2_file imt_buckets
imt_mem_pools_number imt_mem_pools_size imt_path isis_daemon isis_daemon_iface isis_daemon_ip
isis_daemon_msglog isis_daemon_mtu isis_daemon_net kafka_avro_schema_registry kafka_broker_host
kafka_broker_port kafka_cache_entries kafka_config_file kafka_history kafka_history_offset
kafka_history_roundoff kafka_markers kafka_max_writers kafka_multi_values kafka_num_protos kafka_output
kafka_partition kafka_partition_dynamic kafka_partition_key kafka_preprocess kafka_preprocess_type
kafka_refresh_time kafka_startup_delay kafka_topic kafka_topic_rr kafka_trigger_exec logfile maps_entries
maps_index maps_refresh maps_row_len networks_cache_entries networks_file networks_file_filter
networks_file_no_lpm networks_mask networks_no_mask_if_zero nfacctd_account_options nfacctd_allow_file
nfacctd_as nfacctd_disable_checks nfacctd_disable_opt_scope_check nfacctd_dtls_port nfacctd_ext_sampling_rate
nfacctd_ip nfacctd_ipv6_only nfacctd_kafka_broker_host nfacctd_kafka_broker_port nfacctd_kafka_config_file
nfacctd_kafka_topic nfacctd_mcast_groups nfacctd_net nfacctd_peer_as nfacctd_pipe_size nfacctd_port
nfacctd_pro_rating nfacctd_renormalize nfacctd_stitching nfacctd_templates_file nfacctd_templates_port
nfacctd_templates_receiver nfacctd_time_new nfacctd_time_secs nfacctd_zmq_address nfprobe_direction
nfprobe_dont_cache nfprobe_dtls nfprobe_dtls_verify_cert nfprobe_engine nfprobe_hoplimit nfprobe_ifindex
nfprobe_ifindex_override nfprobe_ipprec nfprobe_maxflows nfprobe_peer_as nfprobe_receiver nfprobe_source_ip
nfprobe_timeouts nfprobe_tstamp_usec nfprobe_version pcap_arista_trailer_flag_value pcap_arista_trailer_offset
pcap_direction pcap_filter pcap_ifindex pcap_interface pcap_interface_wait pcap_interfaces_map pcap_protocol
pcap_savefile pcap_savefile_delay pcap_savefile_replay pcap_savefile_wait pidfile plugin_buffer_size
plugin_exit_any plugin_pipe_size plugin_pipe_zmq plugin_pipe_zmq_hwm plugin_pipe_zmq_profile
plugin_pipe_zmq_retry plugins pmacctd_as pmacctd_conntrack_buffer_size pmacctd_ext_sampling_rate
pmacctd_flow_buffer_buckets pmacctd_flow_buffer_size pmacctd_flow_lifetime pmacctd_flow_tcp_lifetime
pmacctd_force_frag_handling pmacctd_frag_buffer_size pmacctd_net pmacctd_nonroot pmacctd_pipe_size
pmacctd_renormalize pmacctd_stitching pmacctd_time_new post_tag post_tag2 pre_tag2_filter pre_tag_filter
pre_tag_label_filter pre_tag_map print_cache_entries print_history print_history_offset print_history_roundoff
print_latest_file print_markers print_max_writers print_num_protos print_output print_output_custom_cfg_file
print_output_custom_lib print_output_file print_output_file_append print_output_lock_file
print_output_separator print_preprocess print_preprocess_type print_refresh_time print_startup_delay
print_trigger_exec print_write_empty_file proc_priority promisc propagate_signals redis_db redis_host
rpki_roas_file rpki_rtr_cache rpki_rtr_cache_ipprec rpki_rtr_cache_pipe_size rpki_rtr_cache_version
sampling_map sampling_rate sfacctd_allow_file sfacctd_as sfacctd_counter_amqp_exchange
sfacctd_counter_amqp_frame_max sfacctd_counter_amqp_heartbeat_interval sfacctd_counter_amqp_host
sfacctd_counter_amqp_passwd sfacctd_counter_amqp_retry sfacctd_counter_amqp_routing_key
sfacctd_counter_amqp_user sfacctd_counter_amqp_vhost sfacctd_counter_file sfacctd_counter_kafka_broker_host
sfacctd_counter_kafka_broker_port sfacctd_counter_kafka_config_file sfacctd_counter_kafka_partition
sfacctd_counter_kafka_retry sfacctd_counter_kafka_topic sfacctd_counter_output sfacctd_counter_persistent_msg
sfacctd_disable_checks sfacctd_ext_sampling_rate sfacctd_ip sfacctd_ipv6_only sfacctd_kafka_broker_host
sfacctd_kafka_broker_port sfacctd_kafka_config_file sfacctd_kafka_topic sfacctd_mcast_groups sfacctd_net
sfacctd_peer_as sfacctd_pipe_size sfacctd_port sfacctd_renormalize sfacctd_stitching sfacctd_time_new
sfacctd_zmq_address sfactd_counter_amqp_exchange_type sfprobe_agentip sfprobe_agentsubid sfprobe_direction
sfprobe_ifindex sfprobe_ifindex_override sfprobe_ifspeed sfprobe_ipprec sfprobe_peer_as sfprobe_receiver
sfprobe_source_ip snaplen sql_cache_entries sql_conn_ca_file sql_data sql_db sql_delimiter sql_dont_try_update
sql_history sql_history_offset sql_history_roundoff sql_host sql_locking_style sql_max_writers
sql_multi_values sql_num_hosts sql_num_protos sql_optimize_clauses sql_passwd sql_port sql_preprocess
sql_preprocess_type sql_recovery_backup_host sql_refresh_time sql_startup_delay sql_table sql_table_schema
sql_table_type sql_table_version sql_trigger_exec sql_trigger_time sql_use_copy sql_user syslog
tee_ipprec tee_kafka_config_file tee_max_receiver_pools tee_max_receivers tee_pipe_size tee_receivers
tee_source_ip tee_transparent telemetry_daemon telemetry_daemon_allow_file telemetry_daemon_decoder
telemetry_daemon_ip telemetry_daemon_ipprec telemetry_daemon_ipv6_only telemetry_daemon_kafka_broker_host
telemetry_daemon_kafka_broker_port telemetry_daemon_kafka_config_file telemetry_daemon_kafka_topic
telemetry_daemon_max_peers telemetry_daemon_msglog_amqp_exchange telemetry_daemon_msglog_amqp_exchange_type
telemetry_daemon_msglog_amqp_frame_max telemetry_daemon_msglog_amqp_heartbeat_interval
telemetry_daemon_msglog_amqp_host telemetry_daemon_msglog_amqp_passwd
telemetry_daemon_msglog_amqp_persistent_msg telemetry_daemon_msglog_amqp_retry
telemetry_daemon_msglog_amqp_routing_key telemetry_daemon_msglog_amqp_routing_key_rr
telemetry_daemon_msglog_amqp_user telemetry_daemon_msglog_amqp_vhost telemetry_daemon_msglog_file
telemetry_daemon_msglog_kafka_broker_host telemetry_daemon_msglog_kafka_broker_port
telemetry_daemon_msglog_kafka_config_file telemetry_daemon_msglog_kafka_partition
telemetry_daemon_msglog_kafka_partition_key telemetry_daemon_msglog_kafka_retry
telemetry_daemon_msglog_kafka_topic telemetry_daemon_msglog_kafka_topic_rr telemetry_daemon_msglog_output
telemetry_daemon_peer_timeout telemetry_daemon_pipe_size telemetry_daemon_port_tcp telemetry_daemon_port_udp
telemetry_daemon_udp_notif_ip telemetry_daemon_udp_notif_nmsgs telemetry_daemon_udp_notif_port
telemetry_daemon_zmq_address telemetry_dump_amqp_exchange telemetry_dump_amqp_exchange_type
telemetry_dump_amqp_frame_max telemetry_dump_amqp_heartbeat_interval telemetry_dump_amqp_host
telemetry_dump_amqp_passwd telemetry_dump_amqp_persistent_msg telemetry_dump_amqp_routing_key
telemetry_dump_amqp_routing_key_rr telemetry_dump_amqp_user telemetry_dump_amqp_vhost telemetry_dump_file
telemetry_dump_kafka_broker_host telemetry_dump_kafka_broker_port telemetry_dump_kafka_config_file
telemetry_dump_kafka_partition telemetry_dump_kafka_partition_key telemetry_dump_kafka_topic
telemetry_dump_kafka_topic_rr telemetry_dump_latest_file telemetry_dump_output telemetry_dump_refresh_time
telemetry_dump_workers thread_stack tmp_asa_bi_flow tmp_bgp_daemon_origin_type_int tmp_bgp_daemon_route_refresh
tmp_bgp_lookup_compare_ports tunnel_0 uacctd_as uacctd_conntrack_buffer_size uacctd_direction
uacctd_ext_sampling_rate uacctd_flow_buffer_buckets uacctd_flow_buffer_size uacctd_flow_lifetime
uacctd_flow_tcp_lifetime uacctd_force_frag_handling uacctd_frag_buffer_size uacctd_group uacctd_net
uacctd_nl_size uacctd_renormalize uacctd_stitching uacctd_threshold use_ip_next_hop ports_file
timestamps_rfc3339 timestamps_secs timestamps_since_epoch timestamps_utc
sfacctd_counter_amqp_exchange_type sfacctd_counter_amqp_persistent_msg
""".split())

# Every aggregation primitive of pmacct 1.7.7 (CONFIG-KEYS `aggregate` and `nfacctd -a`).
PMACCT_PRIMITIVES: frozenset[str] = frozenset("""
as_path class class_frame cos dst_as dst_host dst_host_coords dst_host_country dst_host_pocode dst_mac
dst_mask dst_net dst_port dst_roa etype export_proto_seqno export_proto_sysid export_proto_version ext_comm
flows fw_event in_iface label local_pref lrg_comm med mpls_label_bottom mpls_label_top mpls_pw_id
mpls_stack_depth mpls_vpn_rd nat_event none out_iface peer_dst_as peer_dst_ip peer_src_as peer_src_ip
post_nat_dst_host post_nat_dst_port post_nat_src_host post_nat_src_port proto sampling_direction
sampling_rate src_as src_as_path src_ext_comm src_host src_host_coords src_host_country src_host_pocode
src_local_pref src_lrg_comm src_mac src_mask src_med src_net src_port src_roa src_std_comm std_comm sum_as
sum_host sum_mac sum_net sum_port tag tag2 tcpflags timestamp_arrival timestamp_end timestamp_export
timestamp_start tos tunnel_dst_host tunnel_dst_mac tunnel_dst_port tunnel_proto tunnel_src_host
tunnel_src_mac tunnel_src_port tunnel_tos vlan vxlan
""".split())
