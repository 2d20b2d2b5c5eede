"""kafka_* keys: parsing into the typed tree, nfacctd's refusals, kafka_config_file, message building (pure)."""
from __future__ import annotations

import json

import pytest

from engine.config import ConfigError, loads_config
from engine.config.keys_kafka import bootstrap_servers
from engine.plugins.kafka.messages import pack, static_topic
from engine.plugins.kafka.settings import parse_config_lines, producer_config


def kafka_plugin(text: str):
    return loads_config("plugins: kafka[k]\n" + text).plugins[0]


def test_keys_fill_the_tree(tmp_path):
    cfg = tmp_path / "rdkafka.csv"
    cfg.write_text("global, api.version.request, false\n! comment\n\ntopic, compression.codec, gzip\n")
    p = kafka_plugin(f"kafka_refresh_time: 5\nkafka_history: 5m\nkafka_history_roundoff: m\nkafka_topic: t.$peer_src_ip\n"
                     f"kafka_broker_host: 10.0.0.1\nkafka_broker_port: 9093\nkafka_partition: 3\n"
                     f"kafka_partition_key: $src_host-$proto\nkafka_config_file: {cfg}\nkafka_markers: true\n"
                     f"kafka_num_protos: true\nkafka_output: json\n")
    assert (p.refresh_time, p.history, p.history_secs, p.history_roundoff, p.num_protos) == (5, "5m", 300, "m", True)
    o = p.options
    assert (o.topic, o.broker_host, o.broker_port, o.partition, o.partition_key, o.markers, o.multi_values) == \
        ("t.$peer_src_ip", "10.0.0.1", 9093, 3, "$src_host-$proto", True, 0)
    conf = producer_config(o)
    assert conf["bootstrap.servers"] == "10.0.0.1:9093"
    assert conf["api.version.request"] == "false" and conf["compression.codec"] == "gzip"


def test_defaults_are_pmacct_defaults():
    o = kafka_plugin("").options
    assert (o.topic, o.broker_host, o.broker_port, o.partition, o.multi_values) == ("pmacct.acct", "127.0.0.1", 9092,
                                                                                   -1, 0)


def test_dynamic_topic_with_multi_values_is_refused_like_nfacctd():
    # nfacctd 1.7.7: "dynamic 'kafka_topic' is not compatible with 'kafka_multi_values'. Exiting."
    with pytest.raises(ConfigError) as info:
        kafka_plugin("kafka_topic: x.$peer_src_ip\nkafka_multi_values: 1000\n")
    assert "kafka_multi_values" in str(info.value) and ":3:" in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("kafka_output: avro\n", "not implemented yet"),
    ("kafka_output: xml\n", "bad kafka_output"),
    ("kafka_topic: t.$nope\n", "unknown variable"),
    ("kafka_partition: -2\n", "bad integer"),
    ("print_output: csv\n", "does not apply"),
    ("kafka_config_file: /nonexistent/file\n", "cannot read"),
])
def test_bad_values_name_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        loads_config("plugins: kafka[k]\n" + text.replace(":", "[k]:", 1))
    assert message in str(info.value)


def test_config_file_lines():
    assert parse_config_lines("global, a.b, x,y,z\n topic , c , 1 \n# x\n") == [("global", "a.b", "x,y,z"),
                                                                                ("topic", "c", "1")]
    with pytest.raises(ValueError, match="line 2"):
        parse_config_lines("global, a, b\nglobal a b\n")
    with pytest.raises(ValueError, match="'global' or 'topic'"):
        parse_config_lines("local, a, b\n")


def test_bootstrap_servers_like_pmacct():
    assert bootstrap_servers("127.0.0.1", 9093) == "127.0.0.1:9093"
    assert bootstrap_servers("::1", 9093) == "[::1]:9093"
    assert bootstrap_servers("b1:10000,b2", 1) == "b1:10000,b2:9092"


def test_pack_follows_nfacctd_size_rule():
    # observed on nfacctd 1.7.7: 280-byte objects (279 + "\n"): 3 fit in kafka_multi_values 841, 2 in 840
    objects = ["x" * 279] * 7
    assert pack(objects, 841)[1] == [3, 3, 1]
    assert pack(objects, 840)[1] == [2, 2, 2, 1]
    messages, counts = pack(objects, 100)           # too small for one: each alone
    assert counts == [1] * 7 and all(m.endswith("\n") for m in messages)
    messages, _ = pack(['{"a": 1}', '{"b": 2}'], 1000)
    assert [json.loads(line) for line in messages[0].splitlines()] == [{"a": 1}, {"b": 2}]


def test_marker_topic_takes_the_not_aggregated_values():
    assert static_topic("t.$peer_src_ip.$tag") == "t.null.0"


def test_bad_librdkafka_property_is_a_config_error(tmp_path):
    """librdkafka refuses an unknown property: the plugin stops on a configuration error (engine halts)."""
    from engine.config.tree import CoreConfig
    from engine.plugins.kafka.writer import KafkaWriter
    cfg = tmp_path / "rdkafka.csv"
    cfg.write_text("global, no.such.property, 1\n")
    p = kafka_plugin(f"kafka_config_file: {cfg}\n")
    with pytest.raises(ConfigError, match="librdkafka refuses"):
        KafkaWriter(p, CoreConfig())


def test_tag_variables_take_each_rows_tags():
    """$tag / $tag2 in kafka_topic or kafka_partition_key: the row's value when aggregated, else 0."""
    from engine.config.tree import CoreConfig, PluginConfig
    from engine.plugins.aggregate import Aggregator
    from engine.plugins.kafka.messages import expand
    from engine.schema import empty
    records = empty(3)
    records["tag"] = [7, 9, 7]
    records["tag2"] = [1, 2, 3]
    records["packets"] = records["bytes"] = 1
    aggregator = Aggregator(PluginConfig(name="k", type="kafka", aggregate=("tag", "tag2")), CoreConfig())
    aggregator.add(records)
    rows = aggregator.purge()
    topics = expand("flows.$tag.$tag2", rows)
    tags = list(zip(map(int, rows.column("tag")), map(int, rows.column("tag2"))))
    assert sorted(topics) == sorted(f"flows.{t}.{t2}" for t, t2 in tags) == ["flows.7.1", "flows.7.3", "flows.9.2"]
    only_tag = Aggregator(PluginConfig(name="k", type="kafka", aggregate=("tag",)), CoreConfig())
    only_tag.add(records)
    assert sorted(expand("flows.$tag.$tag2", only_tag.purge())) == ["flows.7.0", "flows.9.0"]
