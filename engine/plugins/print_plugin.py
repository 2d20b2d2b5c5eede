"""The print plugin's writer: formatted / CSV / JSON output to stdout or files, as nfacctd 1.7.7 writes it.

File behaviour (observed on nfacctd 1.7.7):
- print_output_file may hold strftime variables, taken from each row's bin
  (stamp_inserted) with print_history, else from the purge time, and
  $peer_src_ip ("10.0.0.1" -> "10_0_0_1", "::1" -> "__1"; "null" when
  peer_src_ip is not aggregated), $ref (refresh time), $hst (history
  seconds), $tzone; rows are split into one file per expanded name;
- missing directories are created (mode 0700), files are created mode 0600;
- without print_output_file_append each purge rewrites the file; with it,
  rows are appended and the title is written only when the file is new;
- no file is touched when a purge has no rows, unless print_write_empty_file
  (then the file is rewritten with the title / markers only);
- print_markers: "--START (pid)--" / "--END (pid)--" around CSV and formatted
  output; JSON gets purge_init / purge_close objects, purge_close counting the
  rows written so far in this purge (purged_entries) and in total;
- stdout: the title is printed once, on the first purge that prints rows;
- print_latest_file: a symlink to the newest file (the lexicographically
  greatest name), updated after each write.
A write error is logged and counted, never raised.

Several workers of one plugin (plugin_workers > 1, coordinate() with a
purge_rounds.PurgeRounds): under the plugin's lock, the first worker to write
a path in a purge round truncates it and writes the title (without append;
with append the title is written only when the file is new); then each
worker renders and appends its rows in blocks of whole lines, one write()
each, in parallel with the others (files: blocks of different workers may
alternate, lines never mix).  stdout gets its title once over all
workers.  An empty purge writes the empty file (print_write_empty_file) only
when no worker wrote that path in the round.  With print_markers each worker
writes its own --START (pid)--/--END (pid)-- (JSON: purge_init/purge_close,
counting its own rows) around its part: the file holds one marked part per
worker.  One worker (the default) takes none of these steps.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import nullcontext
from typing import Iterable, Iterator, Optional

import numpy as np

from ..config.tree import CoreConfig, PluginConfig
from ..schema import PRIMITIVES
from .aggregate import AggregatedRows
from . import render_bytes
from .destinations import expand_name, split_by_name
from .purge_rounds import PurgeRounds
from .render_bytes import NotRenderable
from .render import (COUNTER_KEYS, FORMATTED_WIDTH, RenderOptions, counter_names, int_values, json_is_string,
                     primitive_values, printed_primitives, stamp_text)

CHUNK_ROWS = 16384
JSON_COUNTER_ORDER = ("flows", "packets", "bytes")     # CSV / formatted: PACKETS, FLOWS, BYTES
OUTPUTS = ("formatted", "csv", "json", "event_formatted", "event_csv")


def separator(text: str) -> str:
    """print_output_separator: one character, or the strings \\t and \\s."""
    return {"\\t": "\t", "\\s": " "}.get(text, text) or ","


class LineFormat:
    """Title and row lines of one output format for one plugin."""

    def __init__(self, plugin: PluginConfig) -> None:
        self.output = plugin.output
        if self.output not in OUTPUTS:
            raise ValueError(f"unsupported print_output {self.output!r}")
        self.events = self.output.startswith("event_")
        self.kind = self.output.replace("event_", "")
        self.sep = separator(plugin.output_separator)
        self.opts = RenderOptions.from_plugin(plugin, "::" if self.kind == "formatted" else "")

    def columns(self, primitives: tuple[str, ...], with_flows: bool) -> tuple[list[str], list[str]]:
        """(primitives in print order, counters) of the lines."""
        counters = [] if self.events else counter_names(with_flows)
        return printed_primitives(primitives), counters

    def title(self, primitives: tuple[str, ...], with_flows: bool) -> Optional[str]:
        if self.kind == "json":
            return None
        prims, counters = self.columns(primitives, with_flows)
        heads = [PRIMITIVES[p].csv_header for p in prims] + [COUNTER_KEYS[c][1] for c in counters]
        if self.kind == "csv":
            return self.sep.join(heads)
        widths = [FORMATTED_WIDTH[p] for p in prims + counters]
        return "".join(h.ljust(w) for h, w in zip(heads, widths))

    def block(self, rows: AggregatedRows) -> str:
        """The row lines of a chunk of rows, each ending in a newline."""
        return self.block_bytes(rows).decode("utf-8")

    def block_bytes(self, rows: AggregatedRows) -> bytes:
        """block() as UTF-8 bytes (CSV and JSON: byte matrices, render_bytes, ~3x faster; formatted output
        is mostly padding, cheaper as %-templates)."""
        try:
            if self.kind != "formatted":
                return render_bytes.block_bytes(self._matrix_pieces(rows), len(rows))
        except NotRenderable:
            pass
        lines = self.template_lines(rows)
        return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""

    def _matrix_block(self, rows: AggregatedRows) -> str:
        return render_bytes.block(self._matrix_pieces(rows), len(rows))

    def _matrix_pieces(self, rows: AggregatedRows) -> list:
        """Constant texts and column word matrices of the lines, in line order."""
        prims, counters = self.columns(rows.primitives, rows.with_flows)
        cols = [render_bytes.primitive(rows, p, self.opts) for p in prims]
        pieces: list = []
        if self.kind == "json":
            pieces.append(b'{"event_type": "purge"')
            for p, col in zip(prims, cols):
                quote = b'"' if json_is_string(p) else b""
                pieces += [f', "{PRIMITIVES[p].json_key}": '.encode() + quote, col, quote]
            if rows.stamp_inserted is not None:
                pieces += [b', "stamp_inserted": "', render_bytes.stamp(rows.stamp_inserted, self.opts), b'"']
                updated = stamp_text(np.array([rows.stamp_updated]), self.opts)[0]
                pieces.append(f', "stamp_updated": "{updated}"'.encode())
            for name in sorted(counters, key=JSON_COUNTER_ORDER.index):
                pieces += [f', "{COUNTER_KEYS[name][0]}": '.encode(), render_bytes.decimal(getattr(rows, name))]
            pieces.append(b"}")
        else:
            cols += [render_bytes.decimal(getattr(rows, name)) for name in counters]
            names = prims + counters
            sep = self.sep.encode() if self.kind == "csv" else b""
            for i, (name, col) in enumerate(zip(names, cols)):
                if i and sep:
                    pieces.append(sep)
                width = FORMATTED_WIDTH[name] if self.kind == "formatted" else 0
                pieces.append(render_bytes.padded(col, width) if width else col)
        return pieces

    def lines(self, rows: AggregatedRows) -> list[str]:
        """The row lines (no newlines) of a chunk of rows."""
        if self.kind != "formatted":
            try:
                return self._matrix_block(rows).split("\n")[:-1]
            except NotRenderable:
                pass
        return self.template_lines(rows)

    def template_lines(self, rows: AggregatedRows) -> list[str]:
        """The row lines (no newlines) of a chunk of rows: one %-template per format, filled in C."""
        prims, counters = self.columns(rows.primitives, rows.with_flows)
        cols = [primitive_values(rows, p, self.opts) for p in prims]
        if self.kind == "json":
            pieces = [(f'"{PRIMITIVES[p].json_key}": "%s"' if json_is_string(p) else f'"{PRIMITIVES[p].json_key}": %s')
                      for p in prims]
            if rows.stamp_inserted is not None:
                pieces.append('"stamp_inserted": "%s"')
                cols.append(stamp_text(rows.stamp_inserted, self.opts))
                updated = stamp_text(np.array([rows.stamp_updated]), self.opts)[0]
                pieces.append(f'"stamp_updated": "{updated}"'.replace("%", "%%"))
            for name in sorted(counters, key=JSON_COUNTER_ORDER.index):
                pieces.append(f'"{COUNTER_KEYS[name][0]}": %s')
                cols.append(int_values(getattr(rows, name)))
            template = "{" + ", ".join(['"event_type": "purge"'] + pieces) + "}"
        else:
            cols += [int_values(getattr(rows, name)) for name in counters]
            names = prims + counters
            if self.kind == "csv":
                template = self.sep.replace("%", "%%").join(["%s"] * len(names))
            else:
                template = "".join(f"%-{FORMATTED_WIDTH[n]}s" if FORMATTED_WIDTH[n] else "%s" for n in names)
        if not cols:
            return [template] * len(rows)
        return list(map(template.__mod__, zip(*cols)))


class _TextOut:
    """A binary write() onto a text stream (stdout replaced by one without a buffer, e.g. in tests)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode("utf-8"))


class _FdOut:
    """write() of whole blocks straight to a file descriptor: one system call per block (O_APPEND keeps a
    block whole against other workers' appends)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


class PrintWriter:
    """Writes each purge's rows; keeps counters of rows, files and write errors."""

    def __init__(self, plugin: PluginConfig, core: CoreConfig, log: Optional[logging.Logger] = None) -> None:
        self.plugin = plugin
        self.log = log or logging.getLogger(f"pmengine.plugin.{plugin.name}")
        self.fmt = LineFormat(plugin)
        self.umask = core.files_umask if core is not None else 0o077
        self.stdout_titled = False
        self.rows_written = 0
        self.write_errors = 0
        self._written_this_purge = 0    # rows written so far in the current purge (purge_close markers)
        self.rounds: Optional[PurgeRounds] = None    # set by coordinate() when several workers share the output
        self.purge_round = 0            # the refresh boundary of the coming write(), set by the plugin loop

    def coordinate(self, rounds: PurgeRounds) -> None:
        """Share the output with the other workers of this plugin (see the module docstring)."""
        self.rounds = rounds

    # -- file names ---------------------------------------------------------------
    def expand(self, template: str, when_s: Optional[int], peer: Optional[str]) -> str:
        """print_output_file / print_latest_file variables (when_s None: no strftime)."""
        return expand_name(template, when_s, peer, self.plugin)

    def targets(self, rows: AggregatedRows) -> Iterator[tuple[str, np.ndarray, Optional[str]]]:
        """(path, row indices, $peer_src_ip text) per output file; path "" is stdout."""
        template = self.plugin.output_file
        if not template:
            yield "", np.arange(len(rows)), None
            return
        for path, idx, _when, peer in split_by_name(template, rows, self.plugin):
            yield path, idx, peer

    # -- writing --------------------------------------------------------------------
    def write(self, rows: AggregatedRows) -> int:
        """Write one purge; returns the rows written (rows of files that failed are not counted)."""
        started = time.time()
        self._written_this_purge = 0
        if len(rows) == 0:
            if self.plugin.output_file and self.plugin.write_empty_file:
                path = self.expand(self.plugin.output_file, rows.stamp_updated, None)
                self._write_file(path, rows, 0, started)
            return 0
        for path, idx, peer in self.targets(rows):
            part = rows if len(idx) == len(rows) else rows.take(idx)
            if path:
                self._write_file(path, part, len(rows), started, peer)
            else:
                self._write_stdout(part, len(rows), started)
        return self._written_this_purge

    def _blocks(self, rows: AggregatedRows) -> Iterator[bytes]:
        for i in range(0, len(rows), CHUNK_ROWS):
            chunk = rows.take(slice(i, i + CHUNK_ROWS)) if len(rows) > CHUNK_ROWS else rows
            yield self.fmt.block_bytes(chunk)

    def _marker_start(self) -> str:
        if self.fmt.kind == "json":
            return f'{{"event_type": "purge_init", "writer_id": "{self.plugin.name}/{os.getpid()}"}}\n'
        return f"--START ({os.getpid()})--\n"

    def _marker_end(self, total: int, started: float) -> str:
        if self.fmt.kind == "json":
            return (f'{{"event_type": "purge_close", "writer_id": "{self.plugin.name}/{os.getpid()}", '
                    f'"purged_entries": {self._written_this_purge}, "total_entries": {total}, '
                    f'"duration": {int(time.time() - started)}}}\n')
        return f"--END ({os.getpid()})--\n"

    def _emit(self, out, rows: AggregatedRows, with_title: bool, total: int, started: float,
              blocks: Optional[Iterable[bytes]] = None) -> None:
        """Markers, title and lines (rendered here, or the given blocks) to a binary stream."""
        if self.plugin.markers:
            out.write(self._marker_start().encode())
        title = self.fmt.title(rows.primitives, rows.with_flows)
        if with_title and title is not None:
            out.write((title + "\n").encode())
        for block in self._blocks(rows) if blocks is None else blocks:
            out.write(block)
        self._written_this_purge += len(rows)
        if self.plugin.markers:
            out.write(self._marker_end(total, started).encode())

    def _write_file(self, path: str, rows: AggregatedRows, total: int, started: float,
                    peer: Optional[str] = None) -> None:
        if self.rounds is not None:
            self._write_shared_file(path, rows, total, started, peer)
            return
        append = self.plugin.output_file_append
        try:
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, mode=0o777 & ~self.umask, exist_ok=True)
            existed = os.path.exists(path)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            with os.fdopen(os.open(path, flags, 0o666 & ~self.umask), "wb") as out:
                self._emit(out, rows, not (append and existed), total, started)
        except OSError as e:
            self.write_errors += 1
            self.log.error("cannot write %s: %s", path, e)
            return
        self.rows_written += len(rows)
        if self.plugin.latest_file:
            self._update_latest(self.expand(self.plugin.latest_file, None, peer), path)

    def _write_stdout(self, rows: AggregatedRows, total: int, started: float) -> None:
        """The title on the first block that prints rows.  Several workers (coordinated): the title once over
        all of them, and a worker's whole part under the plugin's lock (a pipe keeps writes whole only up to
        PIPE_BUF)."""
        if self.rounds is not None:
            turn = self.rounds.claim("", self.purge_round)         # yields whether the title is still due
        else:
            turn = nullcontext(not self.stdout_titled)
        try:
            with turn as with_title:
                sys.stdout.flush()
                stream = getattr(sys.stdout, "buffer", None)
                self._emit(stream or _TextOut(sys.stdout), rows, with_title, total, started)
                (stream or sys.stdout).flush()
        except OSError as e:
            self.write_errors += 1
            self.log.error("cannot write to stdout: %s", e)
            return
        self.stdout_titled = True
        self.rows_written += len(rows)

    # -- several workers, one output (plugin_workers > 1) -------------------------------------------
    def _write_shared_file(self, path: str, rows: AggregatedRows, total: int, started: float,
                           peer: Optional[str]) -> None:
        """_write_file for one of several workers: the round's first truncates and titles, the others append.

        The claim (under the plugin's lock) opens the file, truncating and titling it when this worker is the
        round's first.  The rows are then rendered and appended after the lock, a block of whole lines per
        write() (O_APPEND: workers' blocks never mix within a block), so the workers render in parallel and
        hold one block each in memory.  With print_markers a worker's whole part stays under the lock."""
        append = self.plugin.output_file_append
        fd = -1
        try:
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, mode=0o777 & ~self.umask, exist_ok=True)
            with self.rounds.claim(path, self.purge_round) as first:
                if len(rows) == 0 and not first:
                    return                  # print_write_empty_file: another worker wrote it this round
                truncate = first and not append
                with_title = truncate or (append and not os.path.exists(path))
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
                fd = os.open(path, flags, 0o666 & ~self.umask)
                if self.plugin.markers:
                    self._emit(_FdOut(fd), rows, with_title, total, started)
                else:
                    title = self.fmt.title(rows.primitives, rows.with_flows)
                    if with_title and title is not None:
                        _FdOut(fd).write((title + "\n").encode())
            if not self.plugin.markers:
                for block in self._blocks(rows):
                    _FdOut(fd).write(block)
                self._written_this_purge += len(rows)
        except OSError as e:
            self.write_errors += 1
            self.log.error("cannot write %s: %s", path, e)
            return
        finally:
            if fd >= 0:
                os.close(fd)
        self.rows_written += len(rows)
        if self.plugin.latest_file:
            self._update_latest(self.expand(self.plugin.latest_file, None, peer), path)

    def _update_latest(self, latest: str, path: str) -> None:
        try:
            if os.path.islink(latest) and os.readlink(latest) > path:
                return
            folder = os.path.dirname(latest)
            if folder:
                os.makedirs(folder, mode=0o777 & ~self.umask, exist_ok=True)
            tmp = f"{latest}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(path, tmp)
            os.replace(tmp, latest)
        except OSError as e:
            self.write_errors += 1
            self.log.error("cannot update latest file %s: %s", latest, e)

    def close(self) -> None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
