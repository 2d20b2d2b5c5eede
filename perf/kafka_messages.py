"""Messages/s into Kafka for N aggregated rows (one purge in pmengine), pmengine vs nfacctd 1.7.7's kafka plugin.

A NetFlow v5 pcap of N flows with N distinct 5-tuples (so one purge holds N
rows) is read by each collector (pcap_savefile) with one kafka plugin writing to
the same throwaway broker (tests/kafka_broker.py: Kafka 0.9.0.1), each to its
own topic.  Each collector's log is read as it is written: the clock starts at
"Purging cache - START" and stops when the process has exited (both flush
their producer before exiting), so the time covers rendering the JSON,
producing and delivery.  The messages in each topic are counted from the
broker's offsets afterwards.

    python3 perf/kafka_messages.py [--rows 1000000] [--multi-values 0]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from engine.pcap import UdpPacket, write_pcap  # noqa: E402
from engine.schema import IPV4_MAPPED_PREFIX  # noqa: E402
from kafka_broker import KafkaBroker, broker_missing  # noqa: E402
from netflow_encoder import V5Record, v5_packet  # noqa: E402

AGGREGATE = "src_host, dst_host, src_port, dst_port, proto"


def generate(path: Path, rows: int) -> None:
    now = int(time.time())
    packets = []
    for start in range(0, rows, 30):
        recs = [V5Record(src_addr=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", dst_addr="192.0.2.1",
                         src_port=1024 + i % 7, dst_port=443, proto=6, packets=3, octets=1500 + i % 1000,
                         first=3_000_000, last=3_500_000) for i in range(start, min(start + 30, rows))]
        packets.append(v5_packet(recs, sys_uptime_ms=3_600_000, unix_secs=now, flow_sequence=start))
    src, dst = IPV4_MAPPED_PREFIX + bytes([127, 0, 1, 1]), IPV4_MAPPED_PREFIX + bytes([127, 0, 0, 1])
    write_pcap(str(path), [UdpPacket(now * 1_000_000 + i, src, 40000, dst, 2100, p) for i, p in enumerate(packets)])


def conf(pcap: Path, broker: KafkaBroker, topic: str, config_file: Path, multi_values: int) -> str:
    host, port = broker.bootstrap.split(":")
    return (f"pcap_savefile: {pcap}\nplugins: kafka[perf]\naggregate: {AGGREGATE}\nkafka_refresh_time: 3600\n"
            f"kafka_broker_host: {host}\nkafka_broker_port: {port}\nkafka_topic: {topic}\n"
            f"kafka_config_file: {config_file}\n" + (f"kafka_multi_values: {multi_values}\n" if multi_values else ""))


def timed_run(cmd: list[str], cwd: Path, log_path: Path) -> tuple[float, float, int]:
    """(seconds from the first purge start to the process exit, whole wall time, purges), reading its log live.

    nfacctd purges early, in several goes, when its cache fills up: the clock runs from the first.
    """
    started = time.monotonic()
    purge_at: list[float] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def reader() -> None:
            for line in proc.stdout:
                if "Purging cache - START" in line:
                    purge_at.append(time.monotonic())
                log.write(line)

        thread = threading.Thread(target=reader)
        thread.start()
        proc.wait()
        ended = time.monotonic()
        thread.join()
    problems = [line.strip() for line in open(log_path) if ("ERROR" in line or "WARN" in line)
                and "CONFWARN" not in line and "PROTOERR" not in line and "METADATA" not in line]
    if problems:
        print(f"{Path(cmd[0]).name}: {len(problems)} error/warning lines, e.g. {problems[0][:200]}", file=sys.stderr)
    if proc.returncode != 0 or not purge_at:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}); see {log_path}:\n{log_path.read_text()[-3000:]}")
    return ended - purge_at[0], ended - started, len(purge_at)


def topic_messages(broker: KafkaBroker, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer(broker.client_config(**{"group.id": "perf", "log_level": 0}))
    try:
        meta = consumer.list_topics(topic, timeout=30)
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                   for p in meta.topics[topic].partitions)
    finally:
        consumer.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--multi-values", type=int, default=0, help="kafka_multi_values (bytes), 0: one row a message")
    args = ap.parse_args()
    missing = broker_missing()
    if missing:
        raise SystemExit(missing)
    nfacctd = shutil.which("nfacctd") or "/usr/sbin/nfacctd"
    broker = KafkaBroker(partitions=1).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            pcap = work / "flows.pcap"
            generate(pcap, args.rows)
            config_file = work / "rdkafka.csv"
            config_file.write_text(broker.config_file_lines())
            # nfacctd: pipes that do not drop the pcap's records
            (work / "nf.conf").write_text(
                "daemonize: false\nplugin_pipe_size: 2048000000\nplugin_buffer_size: 2048000\n"
                + conf(pcap, broker, "perf.nf", config_file, args.multi_values))
            (work / "pm.conf").write_text(conf(pcap, broker, "perf.pm", config_file, args.multi_values))
            results = {}
            results["nfacctd"] = timed_run([nfacctd, "-f", str(work / "nf.conf")], work, work / "nf.log")
            results["pmengine"] = timed_run([sys.executable, "-m", "engine.cli", "start", "-f",
                                             str(work / "pm.conf")], REPO, work / "pm.log")
            counts = {"nfacctd": topic_messages(broker, "perf.nf"), "pmengine": topic_messages(broker, "perf.pm")}
    finally:
        broker.close()
    print(f"{args.rows} aggregated rows in one purge, aggregate {AGGREGATE}, "
          f"kafka_multi_values {args.multi_values or 'off'}, Kafka 0.9.0.1 on loopback")
    print(f"{'collector':10} {'messages':>10} {'purges':>7} {'purge→exit s':>13} {'messages/s':>12} {'rows in/s':>12} "
          f"{'wall s':>8}")
    rate = {}
    for name, (purge_s, wall_s, purges) in results.items():
        rate[name] = counts[name] / purge_s
        print(f"{name:10} {counts[name]:10d} {purges:7d} {purge_s:13.2f} {rate[name]:12.0f} "
              f"{args.rows / purge_s:12.0f} {wall_s:8.2f}")
    print(f"ratio pmengine/nfacctd messages/s (messages that reached the broker): "
          f"{rate['pmengine'] / rate['nfacctd']:.2f}")
    if counts["nfacctd"] < args.rows and not args.multi_values:
        print(f"note: nfacctd delivered {counts['nfacctd']} of {args.rows} rows")
    return 0 if counts["pmengine"] and (args.multi_values or counts["pmengine"] == args.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
