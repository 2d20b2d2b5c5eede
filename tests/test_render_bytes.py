"""The byte-matrix renderer (render_bytes, LineFormat.block) against the per-row renderer (LineFormat.lines).

template_lines() (per-row %-templates) is the reference: test_print_format / test_print_vs_nfacctd check it
against nfacctd 1.7.7.  The matrix path (_matrix_block, behind block() and lines()) must print exactly the
same text for every primitive, output format and option.
"""
from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest

from engine.config.tree import CoreConfig, PluginConfig
from engine.plugins import render_bytes
from engine.plugins.aggregate import Aggregator
from engine.plugins.print_plugin import LineFormat
from engine.schema import IPV4_MAPPED_PREFIX, PRIMITIVES, empty

ALL = tuple(p for p in PRIMITIVES if p != "label")


def varied_records(n: int, seed: int = 3) -> np.ndarray:
    """Records with extreme and mixed values: both families, absent addresses, big counters, times."""
    rng = np.random.default_rng(seed)
    r = empty(n)
    r["family"] = rng.choice([0, 4, 6], n, p=[0.1, 0.6, 0.3])
    for col in ("src_host", "dst_host", "peer_src_ip", "peer_dst_ip"):
        r[col] = rng.integers(0, 256, (n, 16), dtype=np.uint8) * (rng.random((n, 1)) < 0.9)
        mapped = rng.random(n) < 0.6
        r[col][mapped, :12] = np.frombuffer(IPV4_MAPPED_PREFIX, np.uint8)
        r[col][rng.random(n) < 0.05] = 0
    r["peer_dst_missing"] = rng.random(n) < 0.2
    for col, hi in (("src_mask", 129), ("dst_mask", 33), ("proto", 256), ("tos", 256), ("tcp_flags", 64)):
        r[col] = rng.integers(0, hi, n)
    for col in ("src_port", "dst_port", "vlan", "etype", "export_proto_version"):
        r[col] = rng.choice([0, 1, 9, 10, 99, 443, 2048, 34525, 65535], n)
    for col in ("src_as", "dst_as", "peer_src_as", "peer_dst_as", "in_iface", "out_iface", "sampling_rate"):
        r[col] = rng.choice([0, 7, 4_294_967_295, 65000, 123_456_789], n)
    for col in ("tag", "tag2"):
        r[col] = rng.choice(np.array([0, 1, 2**64 - 1, 10**19, 12345], np.uint64), n)
    r["src_mac"] = rng.integers(0, 256, (n, 6), dtype=np.uint8)
    r["dst_mac"] = rng.integers(0, 3, (n, 6), dtype=np.uint8) * 127
    base = 1_700_000_000_000_000
    for col in ("ts_start", "ts_end", "ts_arrival"):
        r[col] = np.where(rng.random(n) < 0.1, 0, base + rng.integers(0, 10**9, n))
    r["packets"] = rng.choice(np.array([0, 1, 2**64 - 1, 10**10], np.uint64), n)
    r["bytes"] = rng.integers(0, 2**62, n, dtype=np.uint64)
    r["flows"] = 1
    return r


def assert_same_text(got: str, expected: str) -> None:
    """Equal texts; on a difference, the first differing line (no slow diff of huge strings)."""
    if got != expected:
        pairs = zip(got.split("\n"), expected.split("\n"))
        first = next(((i, g, e) for i, (g, e) in enumerate(pairs) if g != e), None)
        pytest.fail(f"texts differ (lengths {len(got)} vs {len(expected)}), first differing line: {first!r}")


@pytest.fixture(scope="module")
def records():
    return varied_records(3000)


def rows_of(records, aggregate, **options):
    plugin = PluginConfig(name="t", type="print", aggregate=aggregate, **options)
    agg = Aggregator(plugin, CoreConfig(), start_s=1_700_000_000)
    agg.add(records, now_s=1_700_000_100)
    return plugin, agg.purge(now_us=1_700_000_200_000_000)


@pytest.mark.parametrize("output", ["csv", "formatted", "json", "event_csv", "event_formatted"])
@pytest.mark.parametrize("aggregate", [ALL + ("flows",), ("src_host", "dst_host", "src_port", "proto"),
                                       ("peer_src_ip", "in_iface", "out_iface", "src_as", "dst_as"),
                                       ("peer_dst_ip", "src_net", "dst_net", "tcpflags"), ()],
                         ids=["all", "five", "matrix", "nets", "none"])
def test_block_prints_what_lines_prints(records, output, aggregate):
    plugin, rows = rows_of(records, aggregate)
    fmt = LineFormat(dataclasses.replace(plugin, output=output))
    expected = "".join(line + "\n" for line in fmt.template_lines(rows))
    assert_same_text(fmt._matrix_block(rows), expected)
    assert len(rows) > (1 if aggregate else 0)


@pytest.mark.parametrize("options", [dict(num_protos=True), dict(timestamps_since_epoch=True),
                                     dict(timestamps_utc=True, timestamps_secs=True),
                                     dict(history="5m", history_secs=300, output_separator="\\t")])
@pytest.mark.parametrize("output", ["csv", "json"])
def test_block_follows_render_options(records, options, output):
    aggregate = ("proto", "timestamp_start", "timestamp_arrival", "src_host")
    plugin, rows = rows_of(records, aggregate, **options)
    fmt = LineFormat(dataclasses.replace(plugin, output=output))
    assert_same_text(fmt._matrix_block(rows), "".join(line + "\n" for line in fmt.template_lines(rows)))


def test_labels_and_empty_chunks():
    r = empty(4)
    labels = ["", "vpn-α", "a,b", "x" * 32]
    for i, text in enumerate(labels):
        raw = text.encode()
        r["label"][i, :len(raw)] = np.frombuffer(raw, np.uint8)
    plugin, rows = rows_of(r, ("label",))
    fmt = LineFormat(dataclasses.replace(plugin, output="csv"))
    assert sorted(fmt.block(rows).splitlines()) == sorted(fmt.template_lines(rows))
    assert sorted(line.rsplit(",", 2)[0] for line in fmt.block(rows).splitlines()) == sorted(labels)
    assert fmt.block(rows.take(slice(0, 0))) == ""
    assert fmt.lines(rows.take(slice(0, 0))) == []
    r["label"][0, :3] = np.frombuffer(b"a\nb", np.uint8)            # a newline: per-row path, same lines
    plugin, rows = rows_of(r, ("label",))
    fmt = LineFormat(dataclasses.replace(plugin, output="json"))
    assert len(fmt.lines(rows)) == 4 and fmt.lines(rows) == fmt.template_lines(rows)


EDGES = sorted({0, 1, 9, 10, 99, 100, 255, 256, 999, 1000, 9999, 10000, 10001, 65535, 65536, 99999999, 10**8,
                10**8 + 1, 2**32 - 1, 2**32, 10**12, 10**16 - 1, 10**16, 2**63, 10**19, 2**64 - 1}
               | {10**k - 1 for k in range(1, 20)} | {10**k for k in range(20)})


@pytest.mark.parametrize("dtype", ["u1", "u2", "u4", "u8", "i8"])
def test_decimal_prints_what_str_prints(dtype):
    info = np.iinfo(dtype)
    values = np.array([v for v in EDGES if v <= info.max], dtype=dtype)
    values = np.concatenate([values, np.random.default_rng(1).integers(0, info.max, 5000, dtype=dtype,
                                                                       endpoint=True)])
    text = render_bytes.block_bytes([render_bytes.decimal(values)], len(values)).decode()
    assert text == "".join(f"{v}\n" for v in values.tolist())


def test_dotted_prints_what_inet_ntoa_prints():
    rng = np.random.default_rng(2)
    quads = rng.integers(0, 256, (20000, 4), dtype=np.uint8)
    quads[:6] = [[0, 0, 0, 0], [255, 255, 255, 255], [1, 2, 3, 4], [100, 10, 1, 0], [9, 99, 199, 255], [0, 0, 0, 1]]
    addr16 = np.zeros((len(quads), 16), np.uint8)
    addr16[:, 12:] = quads
    keys = np.zeros(len(quads), np.dtype([("pad", "u1", (8,)), ("addr", "u1", (16,)), ("x", "u8")]))
    keys["addr"] = addr16                        # a strided key column, as the aggregator hands it over
    expected = "".join(socket.inet_ntoa(q.tobytes()) + "\n" for q in quads)
    for column in (quads, addr16[:, 12:], keys["addr"][:, 12:]):
        assert render_bytes.block_bytes([render_bytes.dotted(column)], len(quads)).decode() == expected


def test_block_bytes_trims_columns_and_keeps_constants():
    n = 5
    absent = np.zeros((n, 3), np.uint64)                        # no text in any row: no bytes at all
    wide = np.zeros((n, 2), np.uint64)
    wide.view(np.uint8)[:, 9] = np.frombuffer(b"abcde", np.uint8)  # one byte used in the middle of 16
    pieces = [b"<", absent, b"|", wide, b"", render_bytes.decimal(np.arange(n, dtype=np.uint64) * 1000), b">"]
    got = render_bytes.block_bytes(pieces, n)
    assert got == b"".join(f"<|{c}{i * 1000}>\n".encode() for i, c in enumerate("abcde"))
    assert render_bytes.block(pieces, n) == got.decode()
    assert render_bytes.block_bytes(pieces, 0) == b""


def test_writer_on_a_text_only_stdout(monkeypatch, records):
    import io
    from engine.plugins.print_plugin import PrintWriter
    plugin, rows = rows_of(records[:50], ("src_host", "proto"), output="csv")
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    assert PrintWriter(plugin, CoreConfig()).write(rows) == len(rows)
    fmt = LineFormat(plugin)
    assert stream.getvalue() == fmt.title(rows.primitives, rows.with_flows) + "\n" + fmt.block(rows)
