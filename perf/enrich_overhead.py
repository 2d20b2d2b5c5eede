"""Enrichment overhead: decode alone vs decode + networks enrichment, on the same batches.

    python perf/enrich_overhead.py [--prefixes N] [--batches B] [--mode longest|file]

Traffic: tests/networks_traffic.py (NetFlow v9, IPv4 and IPv6, 20 records per packet, 512 packets
per batch).  Networks file: the tests' overlapping prefixes plus N random IPv4/IPv6 prefixes (default
100000).  Prints records/s of both paths and the ratio (decode+enrich) / decode.  The enrichment is a
PluginStage step and runs in the plugin process, not the shard: the ratio is what it would add if both
ran on one core.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from networks_traffic import NETWORKS_FILE, generate  # noqa: E402
from engine.config.tree import CoreConfig, PluginConfig  # noqa: E402
from engine.decoders import decode_batch  # noqa: E402
from engine.decoders.batch import PacketBatch  # noqa: E402
from engine.decoders.state import DecoderState  # noqa: E402
from engine.enrich.networks import NetworksStage  # noqa: E402

BATCH_PACKETS = 512


def networks_file(path: str, extra: int) -> None:
    rng = random.Random(1)
    lines = [NETWORKS_FILE]
    for i in range(extra):
        if i % 2:
            plen = rng.randint(8, 30)
            net = ipaddress.ip_network(f"{ipaddress.IPv4Address(rng.getrandbits(32))}/{plen}", strict=False)
        else:
            plen = rng.randint(16, 64)
            net = ipaddress.ip_network(f"{ipaddress.IPv6Address(rng.getrandbits(128))}/{plen}", strict=False)
        lines.append(f"{rng.randint(1, 65000)},{net}\n")
    with open(path, "w") as f:
        f.writelines(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--mode", default="longest", choices=["longest", "file"])
    args = ap.parse_args()

    packets, _ = generate(count=BATCH_PACKETS * args.batches // 2, per_packet=20)
    payloads = [(p.payload, p.src, p.ts_us) for p in packets]
    batches = [PacketBatch.from_packets(payloads[i:i + BATCH_PACKETS]) for i in range(0, len(payloads), BATCH_PACKETS)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "networks.lst")
        networks_file(path, args.prefixes)
        t = time.perf_counter()
        stage = NetworksStage(PluginConfig(name="p", type="print", networks_file=path),
                              CoreConfig(net_source=args.mode, as_source=args.mode), logging.getLogger("perf"), {})
        load_s = time.perf_counter() - t

    def run(enrich: bool) -> tuple[float, int]:
        state = DecoderState()
        n = 0
        t0 = time.perf_counter()
        for b in batches:
            recs = decode_batch(b, state).records
            if enrich:
                recs = stage.apply(recs)
            n += len(recs)
        return time.perf_counter() - t0, n

    run(False)                                  # warm-up
    base = min(run(False)[0] for _ in range(3))
    full, n = min(run(True) for _ in range(3))
    print(f"networks file: {args.prefixes + NETWORKS_FILE.count('/')} prefixes, loaded in {load_s:.2f} s; "
          f"mode {args.mode}; {n} records in {len(batches)} batches")
    print(f"decode:          {n / base / 1e6:6.2f} M records/s ({base * 1e3:.0f} ms)")
    print(f"decode + enrich: {n / full / 1e6:6.2f} M records/s ({full * 1e3:.0f} ms)")
    print(f"overhead ratio:  {full / base:.3f}")


if __name__ == "__main__":
    main()
