"""The kafka plugin end to end, against a real Kafka broker and nfacctd 1.7.7's own kafka plugin.

One generated NetFlow v9 pcap is read by pmengine and by nfacctd with the same
kafka plugins (one topic prefix each: "pm." / "nf."), both writing to the same
throwaway broker (tests/kafka_broker.py); every message of both is consumed and
compared, parsed, ignoring writer_id (pid), stamp_updated and duration (the
run's own clock).  The rows are also checked against aggregates computed here
from the generated flows.  Plugins cover history bins (roundoff m: without it
the bin grid follows each daemon's start minute), kafka_multi_values, markers,
a $peer_src_ip topic, a $peer_src_ip partition key, kafka_partition,
kafka_num_protos with epoch timestamps, and kafka_config_file (global and topic
lines: the broker needs the former).

Differences from nfacctd, each asserted by name below:
- kafka_partition: nfacctd 1.7.7 ignores it (its messages are spread by the
  partitioner); pmengine sends everything to the configured partition.
- kafka_multi_values with a partition key: pmengine packs rows per key (the
  message key is the key of every row in it); nfacctd sends a packed message
  with the key of the row that came after it.
"""
from __future__ import annotations

import json
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import run_nfacctd_pcap, run_pmengine_pcap
from engine.pcap import UdpPacket, write_pcap
from engine.schema import IPV4_MAPPED_PREFIX
from kafka_broker import kafka_broker  # noqa: F401  (the session-scoped broker fixture)
from netflow_encoder import Exporter, Field, Template, data_set, template_set

T0 = 1_700_000_000
UPTIME_MS = 3_600_000
V4 = Template(256, [Field(8, 4), Field(12, 4), Field(7, 2), Field(11, 2), Field(4, 1), Field(1, 8), Field(2, 8),
                    Field(22, 4), Field(21, 4), Field(10, 4), Field(14, 4)])
V6 = Template(257, [Field(27, 16), Field(28, 16), Field(7, 2), Field(11, 2), Field(4, 1), Field(1, 8), Field(2, 8),
                    Field(22, 4), Field(21, 4), Field(10, 4), Field(14, 4)])
EXPORTERS = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp"}
MULTI_VALUES = 1000

PLUGINS = {
    "plain": {"aggregate": "peer_src_ip, src_host, dst_host, src_port, dst_port, proto, flows",
              "kafka_topic": "{p}plain"},
    "hist": {"aggregate": "peer_src_ip, src_host, proto", "kafka_topic": "{p}hist.$peer_src_ip",
             "kafka_history": "5m", "kafka_history_roundoff": "m"},
    "multi": {"aggregate": "src_host, dst_port, proto, flows", "kafka_topic": "{p}multi",
              "kafka_multi_values": str(MULTI_VALUES), "kafka_markers": "true", "kafka_history": "5m",
              "kafka_history_roundoff": "m"},
    "keyed": {"aggregate": "peer_src_ip, dst_host, src_port", "kafka_topic": "{p}keyed",
              "kafka_partition_key": "$peer_src_ip", "kafka_markers": "true"},
    "part": {"aggregate": "in_iface, out_iface, proto", "kafka_topic": "{p}part", "kafka_partition": "1",
             "kafka_num_protos": "true", "kafka_history": "1h", "kafka_history_roundoff": "h",
             "timestamps_since_epoch": "true"},
}


def generate_flows(seed: int = 7) -> list[dict]:
    """Flows with repeated keys (so that aggregation merges), IPv4 and IPv6, spread over an hour."""
    rng = random.Random(seed)
    flows = []
    for i in range(600):
        v6 = i % 10 == 9
        k = rng.randrange(40)
        ago = rng.randrange(61, 3500)
        if (T0 - ago) % 60 == 0:            # keep off bin boundaries: nfacctd puts those in the previous bin
            ago += 7
        flows.append({
            "exporter": EXPORTERS[k % 3], "v6": v6,
            "src": f"2001:db8::{k + 1:x}" if v6 else f"10.1.{k // 8}.{k}", "dst": "2001:db8::ff" if v6 else "192.0.2.9",
            "sport": 1000 + k % 7, "dport": (443, 53, 80)[k % 3], "proto": (6, 17, 6)[k % 3],
            "bytes": rng.randrange(40, 150000), "packets": rng.randrange(1, 100),
            "start": T0 - ago, "in": k % 4, "out": k % 3,
        })
    return flows


def write_flows_pcap(path: Path, flows: list[dict]) -> None:
    packets = []
    for e, exporter in enumerate(EXPORTERS):
        exp = Exporter(version=9, domain_id=e, unix_secs=T0, sys_uptime_ms=UPTIME_MS)
        mine = [f for f in flows if f["exporter"] == exporter]
        packets.append((exporter, exp.packet([template_set(9, [V4, V6])])))
        for v6 in (False, True):
            recs = [[f["src"], f["dst"], f["sport"], f["dport"], f["proto"], f["bytes"], f["packets"],
                     UPTIME_MS - (T0 - f["start"]) * 1000, UPTIME_MS - (T0 - f["start"]) * 1000 + 500,
                     f["in"], f["out"]] for f in mine if f["v6"] == v6]
            for i in range(0, len(recs), 20):
                packets.append((exporter, exp.packet([data_set(V6 if v6 else V4, recs[i:i + 20])],
                                                     data_records=len(recs[i:i + 20]))))
    dst = IPV4_MAPPED_PREFIX + bytes([127, 0, 0, 1])
    write_pcap(str(path), [UdpPacket(T0 * 1_000_000 + i, IPV4_MAPPED_PREFIX + bytes(map(int, src.split("."))), 40000,
                                     dst, 2100, payload) for i, (src, payload) in enumerate(packets)])


def collector_conf(prefix: str, pcap: Path, broker, config_file: Path) -> str:
    host, port = broker.bootstrap.split(":")
    lines = [f"pcap_savefile: {pcap}", f"plugins: {', '.join(f'kafka[{n}]' for n in PLUGINS)}",
             f"kafka_broker_host: {host}", f"kafka_broker_port: {port}", f"kafka_config_file: {config_file}",
             "kafka_refresh_time: 3600"]
    for name, keys in PLUGINS.items():
        lines += [f"{key}[{name}]: {value.replace('{p}', prefix)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def runs(kafka_broker, tmp_path_factory):
    """Both collectors on the same pcap and broker; every message of each, by plugin name."""
    work = tmp_path_factory.mktemp("kafka_e2e")
    flows = generate_flows()
    pcap = work / "flows.pcap"
    write_flows_pcap(pcap, flows)
    config_file = work / "rdkafka.csv"
    config_file.write_text(kafka_broker.config_file_lines() + "topic, compression.codec, gzip\n"
                           "global, client.id, pmacct-test\n")
    tag = f"{time.monotonic_ns()}"
    out = {"flows": flows}
    for who, run in (("nf", run_nfacctd_pcap), ("pm", run_pmengine_pcap)):
        prefix = f"{who}{tag}."
        folder = work / who
        folder.mkdir()
        if who == "nf":
            # nfacctd 1.7.7's writers give up on a topic the broker is still auto-creating when the box is
            # loaded ("Connection failed to Kafka: p_kafka_check_outq_len()", nothing delivered): its topics
            # exist beforehand.  pmengine's auto-create their own (and test_plugin_workers_send_the_same_rows).
            kafka_broker.create_topics(reference_topics(prefix))
        proc = run(collector_conf(prefix, pcap, kafka_broker, config_file), folder)
        # nfacctd 1.7.7's kafka writers are forked at its purge and may still be producing after its core exited
        out[who] = read_by_plugin(kafka_broker, prefix, lambda got: set(PLUGINS) <= set(got))
        out[who + "_prefix"] = prefix
        out[who + "_log"] = proc.stderr[-3000:] if isinstance(proc.stderr, str) else ""
    return out


def reference_topics(prefix: str) -> list[str]:
    """Every topic the plugins write to: the static ones and hist's one per exporter ($peer_src_ip, "." as "_")."""
    names = [keys["kafka_topic"].replace("{p}", prefix) for keys in PLUGINS.values()]
    return [n.replace("$peer_src_ip", ip.replace(".", "_")) for n in names
            for ip in (EXPORTERS if "$peer_src_ip" in n else EXPORTERS[:1])]


def read_by_plugin(kafka_broker, prefix: str, done, wait_s: float = 30.0) -> dict[str, list]:
    """Every message of the run's topics, by plugin name; read again (each read starts from the beginning and
    stops after 2 s without a message) until done(messages by plugin) or wait_s has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        by_plugin = defaultdict(list)
        for msg in kafka_broker.consume(kafka_broker.topics(prefix), idle=2.0):
            by_plugin[msg.topic()[len(prefix):].split(".")[0]].append(msg)
        if done(by_plugin) or time.monotonic() > deadline:
            return by_plugin
        time.sleep(1.0)


def objects(messages) -> list[dict]:
    """Every JSON object of the messages (multi-value messages hold several, newline-terminated)."""
    return [json.loads(line) for m in messages for line in m.value().decode().split("\n") if line]


def comparable(obj: dict) -> str:
    obj = {k: v for k, v in obj.items() if k not in ("writer_id", "stamp_updated", "duration")}
    return json.dumps(obj, sort_keys=False)


def rows(messages) -> Counter:
    return Counter(comparable(o) for o in objects(messages) if o["event_type"] == "purge")


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_rows_equal_nfacctd(runs, plugin):
    ours, theirs = rows(runs["pm"][plugin]), rows(runs["nf"][plugin])
    assert theirs, f"nfacctd sent nothing for {plugin}; its log ends:\n{runs['nf_log']}"
    assert ours == theirs


def local_stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def test_plain_rows_are_the_aggregates_of_the_flows(runs):
    expected = Counter()
    for f in runs["flows"]:
        key = (f["exporter"], f["src"], f["dst"], f["sport"], f["dport"], PROTO_NAMES[f["proto"]])
        expected[key + ("flows",)] += 1
        expected[key + ("packets",)] += f["packets"]
        expected[key + ("bytes",)] += f["bytes"]
    got = Counter()
    for o in objects(runs["pm"]["plain"]):
        assert list(o) == ["event_type", "peer_ip_src", "ip_src", "ip_dst", "port_src", "port_dst", "ip_proto",
                           "flows", "packets", "bytes", "writer_id"]
        key = (o["peer_ip_src"], o["ip_src"], o["ip_dst"], o["port_src"], o["port_dst"], o["ip_proto"])
        for counter in ("flows", "packets", "bytes"):
            assert (key + (counter,)) not in got, f"row {key} sent twice"
            got[key + (counter,)] = o[counter]
    assert got == expected


def test_history_bins_are_the_flows_5_minute_bins(runs):
    expected = Counter()
    for f in runs["flows"]:
        key = (f["exporter"], f["src"], PROTO_NAMES[f["proto"]], local_stamp(f["start"] - f["start"] % 300))
        expected[key] += f["bytes"]
    got = Counter()
    for msg in runs["pm"]["hist"]:
        for o in objects([msg]):
            key = (o["peer_ip_src"], o["ip_src"], o["ip_proto"], o["stamp_inserted"])
            got[key] += o["bytes"]
            # $peer_src_ip in the topic: the exporter with "." turned into "_"
            assert msg.topic().endswith(".hist." + o["peer_ip_src"].replace(".", "_"))
    assert got == expected


def test_dynamic_topics_equal_nfacctd(runs):
    def names(who):
        return sorted(m.topic()[len(runs[who + "_prefix"]):] for m in runs[who]["hist"])
    assert names("pm") == names("nf")
    assert set(names("pm")) == {"hist." + e.replace(".", "_") for e in EXPORTERS}


WRITER_ID = re.compile(r"^(\w+)/(\d+)$")


@pytest.mark.parametrize("who", ["pm", "nf"])
def test_writer_id_is_plugin_name_and_pid(runs, who):
    for plugin, messages in runs[who].items():
        ids = {o["writer_id"] for o in objects(messages)}
        assert len(ids) == 1, ids
        match = WRITER_ID.match(ids.pop())
        assert match and match.group(1) == plugin


def packed_messages(messages) -> list[bytes]:
    return [m.value() for m in messages if b'"event_type": "purge",' in m.value()]


@pytest.mark.parametrize("who", ["pm", "nf"])
def test_multi_values_packing(runs, who):
    """Objects newline-terminated; a message is < kafka_multi_values bytes and the next object would not fit."""
    by_partition = defaultdict(list)
    for m in runs[who]["multi"]:
        if b'"event_type": "purge",' in m.value():
            by_partition[m.partition()].append(m.value())
    assert by_partition
    for values in by_partition.values():
        for i, value in enumerate(values):
            assert value.endswith(b"\n") and len(value) < MULTI_VALUES
            if i + 1 < len(values):
                first_next = values[i + 1].split(b"\n")[0]
                assert len(value) + len(first_next) + 1 >= MULTI_VALUES
    # markers travel in messages of their own
    events = [o["event_type"] for m in runs[who]["multi"] for o in objects([m]) if not m.value().endswith(b"\n")]
    assert Counter(events) == Counter({"purge_init": 1, "purge_close": 1})


@pytest.mark.parametrize("plugin", ["multi", "keyed"])
def test_markers_equal_nfacctd(runs, plugin):
    def markers(who):
        found = [comparable(o) for o in objects(runs[who][plugin]) if o["event_type"] != "purge"]
        return sorted(found)
    ours = markers("pm")
    assert ours == markers("nf")
    close = json.loads([m for m in ours if "purge_close" in m][0])
    assert close["purged_entries"] == close["total_entries"] == sum(rows(runs["pm"][plugin]).values())


def test_partition_key_and_partitioner_equal_nfacctd(runs):
    """Each row's key is its exporter with "_"; librdkafka's partitioner puts a key where nfacctd's puts it."""
    placement = {}
    for who in ("pm", "nf"):
        seen = {}
        for m in runs[who]["keyed"]:
            for o in objects([m]):
                if o["event_type"] == "purge":
                    assert m.key() == o["peer_ip_src"].replace(".", "_").encode()
                    seen.setdefault(m.key(), set()).add(m.partition())
        assert all(len(parts) == 1 for parts in seen.values())
        placement[who] = seen
    assert placement["pm"] == placement["nf"]


def test_kafka_partition_is_honoured(runs):
    """Named difference: nfacctd 1.7.7 ignores kafka_partition (observed: its messages spread over the
    partitions); pmengine sends every message to the configured partition."""
    assert {m.partition() for m in runs["pm"]["part"]} == {1}
    assert {m.partition() for m in runs["nf"]["part"]} <= {0, 1}


def test_plugin_workers_send_the_same_rows(runs, kafka_broker, tmp_path):
    """plugin_workers: 3 workers per plugin, each producing its share of the keys: the same rows as one process
    (plain 5-tuple, per-exporter topics with history bins, multi-value packing with markers)."""
    pcap = tmp_path / "flows.pcap"
    write_flows_pcap(pcap, runs["flows"])
    config_file = tmp_path / "rdkafka.csv"
    config_file.write_text(kafka_broker.config_file_lines())
    prefix = f"pw{time.monotonic_ns()}."
    proc = run_pmengine_pcap(collector_conf(prefix, pcap, kafka_broker, config_file) + "plugin_workers: 3\n", tmp_path)
    # 3 producers auto-create each topic at once; the broker may refuse all but one ("Invalid topic"): the
    # writers produce those messages again (KafkaWriter TOPIC_RETRIES) and lose none
    assert "lost_rows=0" in proc.stderr and "last error" not in proc.stderr, proc.stderr[-3000:]
    # every row was delivered (lost_rows=0): read until all of them are seen
    by_plugin = read_by_plugin(kafka_broker, prefix,
                               lambda got: all(rows(got[p]) == rows(runs["pm"][p]) for p in PLUGINS))
    for plugin in PLUGINS:
        assert rows(by_plugin[plugin]) == rows(runs["pm"][plugin]), plugin
    writers = {o["writer_id"].split("/")[1] for o in objects(by_plugin["plain"])}
    assert len(writers) == 3, "every worker produced its share"
