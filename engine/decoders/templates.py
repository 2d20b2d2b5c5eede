"""NetFlow v9 / IPFIX templates: parsing template sets and compiling templates to numpy dtypes.

A template is parsed once into a `Template` (its field list) and compiled once
into a `CompiledTemplate`: a numpy dtype that views one record's bytes with one
named column per used field, plus the list of (column, IeSpec) to convert.  A
template with variable-length fields (IPFIX length 65535) compiles to the dtype
of its fixed-length fields laid end to end: the slow path in netflow_v9 first
copies each record's fixed fields into that layout.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .ie import IeSpec, spec_for

VARLEN = 0xFFFF
V9_TEMPLATE_SET, V9_OPTIONS_SET = 0, 1
IPFIX_TEMPLATE_SET, IPFIX_OPTIONS_SET = 2, 3
MIN_DATA_SET_ID = 256
MAX_FIELDS = 1024              # a template with more fields is treated as malformed


class TemplateError(ValueError):
    """A template set that cannot be parsed."""


@dataclass(frozen=True)
class TemplateField:
    ie: int
    length: int                # VARLEN (65535) for IPFIX variable-length fields
    pen: int = 0               # enterprise number (IPFIX), 0 for IANA IEs


@dataclass(frozen=True)
class Template:
    """A data or options template as announced by the exporter; fields=() means withdrawn."""
    version: int               # 9 or 10
    template_id: int
    fields: tuple[TemplateField, ...]
    scope_count: int = 0
    options: bool = False

    @property
    def withdrawn(self) -> bool:
        return not self.fields

    @property
    def has_varlen(self) -> bool:
        return any(f.length == VARLEN for f in self.fields)

    @property
    def min_record_length(self) -> int:
        """Fixed part of one record (a varlen field takes at least its 1-byte length)."""
        return sum(1 if f.length == VARLEN else f.length for f in self.fields)


@dataclass
class CompiledTemplate:
    """A template compiled for vectorised decoding."""
    template: Template
    wire_dtype: np.dtype                     # one record (fixed fields only for varlen templates)
    # role or record column → (name of the field in wire_dtype, width on the wire, IeSpec)
    columns: dict[str, tuple[str, int, IeSpec]] = field(default_factory=dict)
    record_length: int = 0                   # bytes per record on the wire; 0 when varlen
    field_lengths: tuple[int, ...] = ()      # wire lengths, for the varlen slow path
    plans: dict = field(default_factory=dict, compare=False, repr=False)   # ie.record_plan, per settings

    @property
    def options(self) -> bool:
        return self.template.options

    @property
    def varlen(self) -> bool:
        return self.record_length == 0


def compile_template(template: Template) -> Optional[CompiledTemplate]:
    """Compile a template; None when it has no decodable record (zero length).

    When an IE occurs several times (e.g. outer and inner headers), the last
    occurrence is used, as nfacctd does.
    """
    chosen: dict[str, tuple[int, int, int, IeSpec]] = {}      # role → (field index, offset, width, spec)
    offset = 0
    v9_scope = template.version == 9 and template.options
    for i, f in enumerate(template.fields):
        if f.length == VARLEN or f.length == 0:
            continue
        spec = None if (v9_scope and i < template.scope_count) else spec_for(f.ie, f.pen, f.length)
        if spec is not None:
            chosen[spec.column] = (i, offset, f.length, spec)
        offset += f.length
    if offset == 0 and not template.has_varlen:
        return None
    names, formats, offsets = [], [], []
    columns: dict[str, tuple[str, int, IeSpec]] = {}
    for role, (i, off, width, spec) in chosen.items():
        names.append(f"f{i}")
        formats.append(_wire_format(spec, width))
        offsets.append(off)
        columns[role] = (f"f{i}", width, spec)
    wire = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(offset, 1)})
    return CompiledTemplate(
        template=template,
        wire_dtype=wire,
        columns=columns,
        record_length=0 if template.has_varlen else offset,
        field_lengths=tuple(f.length for f in template.fields),
    )


def _wire_format(spec: IeSpec, length: int):
    if spec.kind == "uint" and length in (1, 2, 4, 8):
        return np.dtype(f">u{length}")
    return np.dtype(("u1", (length,)))


# -- parsing template sets ------------------------------------------------------------

def parse_template_set(version: int, set_id: int, body: bytes | memoryview) -> tuple[list[Template], bool]:
    """All template records of one template / options template set, and whether the set was malformed.

    Withdrawals (IPFIX field count 0) come back as templates with no fields.  On a
    malformed record the templates parsed before it are still returned.
    """
    options = set_id in (V9_OPTIONS_SET, IPFIX_OPTIONS_SET)
    out: list[Template] = []
    pos, end = 0, len(body)
    try:
        while end - pos >= 4:
            if version == 9 and options:
                t, pos = _parse_v9_options(body, pos, end)
            else:
                t, pos = _parse_record(version, options, body, pos, end)
            if t is None:          # padding
                break
            out.append(t)
    except TemplateError:
        return out, True
    return out, False


def _parse_record(version: int, options: bool, body, pos: int, end: int) -> tuple[Optional[Template], int]:
    tid, count = struct.unpack_from(">HH", body, pos)
    pos += 4
    if tid == 0 and count == 0:
        return None, end                        # zero padding
    scope = 0
    if count == 0:
        if version == 10:
            return Template(version, tid, (), 0, options), pos      # withdrawal
        raise TemplateError(f"template {tid}: no fields")
    if options:
        if end - pos < 2:
            raise TemplateError(f"options template {tid}: truncated")
        scope = struct.unpack_from(">H", body, pos)[0]
        pos += 2
        if scope > count:
            raise TemplateError(f"options template {tid}: scope count {scope} of {count}")
    if tid < MIN_DATA_SET_ID:
        raise TemplateError(f"template id {tid} below 256")
    if count > MAX_FIELDS:
        raise TemplateError(f"template {tid}: {count} fields")
    fields = []
    for _ in range(count):
        if end - pos < 4:
            raise TemplateError(f"template {tid}: truncated field list")
        ie, length = struct.unpack_from(">HH", body, pos)
        pos += 4
        pen = 0
        if version == 10 and ie & 0x8000:
            if end - pos < 4:
                raise TemplateError(f"template {tid}: truncated enterprise number")
            pen = struct.unpack_from(">I", body, pos)[0]
            pos += 4
            ie &= 0x7FFF
        fields.append(TemplateField(ie, length, pen))
    return Template(version, tid, tuple(fields), scope, options), pos


def _parse_v9_options(body, pos: int, end: int) -> tuple[Optional[Template], int]:
    if end - pos < 6:
        return None, end                        # padding
    tid, scope_len, opt_len = struct.unpack_from(">HHH", body, pos)
    pos += 6
    if tid == 0 and scope_len == 0 and opt_len == 0:
        return None, end
    if tid < MIN_DATA_SET_ID or scope_len % 4 or opt_len % 4 or pos + scope_len + opt_len > end:
        raise TemplateError(f"v9 options template {tid}: bad lengths {scope_len}/{opt_len}")
    n = (scope_len + opt_len) // 4
    if n == 0 or n > MAX_FIELDS:
        raise TemplateError(f"v9 options template {tid}: {n} fields")
    raw = struct.unpack_from(f">{2 * n}H", body, pos)
    fields = tuple(TemplateField(raw[2 * i], raw[2 * i + 1]) for i in range(n))
    return Template(9, tid, fields, scope_len // 4, True), pos + scope_len + opt_len


# -- a compact wire form for the template bus -------------------------------------------

def template_to_bytes(t: Template) -> bytes:
    head = struct.pack(">BBHHH", t.version, int(t.options), t.template_id, t.scope_count, len(t.fields))
    return head + b"".join(struct.pack(">HHI", f.ie, f.length, f.pen) for f in t.fields)


def template_from_bytes(b: bytes) -> Template:
    version, options, tid, scope, n = struct.unpack_from(">BBHHH", b, 0)
    if version not in (9, 10) or len(b) != 8 + 8 * n:
        raise TemplateError("bad template payload")
    fields = tuple(TemplateField(*struct.unpack_from(">HHI", b, 8 + 8 * i)) for i in range(n))
    return Template(version, tid, fields, scope, bool(options))
