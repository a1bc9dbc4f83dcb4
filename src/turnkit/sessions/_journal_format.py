"""The on-disk format of the file store's journals: header, frames, their bodies, CRCs and payloads.

File format (version 1; integers are unsigned LEB128 varints unless noted):

    header  b"turnkit-journal\\n", version, tenant (string), CRC-32 of the bytes before it (4 bytes LE)
    frame   length of body, body, CRC-32 of length and body (4 bytes LE)
    body    one kind byte, then
      1 record  key (name), revision, session it becomes head of (name or none),
                base (bytes back to the base frame, 0: none), chain depth, codec byte, payload
      2 log     log id (name), index of its first entry, entry count, base, depth, codec, payload
      3 lease   lease name (name), owner (string, "" = released), expiry (float64 LE, Unix time)
      4 head    session (name), key (name)
    string  length, UTF-8 bytes
    name    0: none; 1: a new name follows (string) and takes the next number; n >= 2: name number n - 2

Names (keys, session and log ids, lease names) are numbered in the order the journal first spells
them, so each is written once and referenced by a small number after that. A payload is a record's
JSON text, or a log append's entries joined by newlines; codec 0 stores it as is, codec 1 as raw
deflate primed with the base frame's text (for a record, its key, a newline and its JSON), so a record
that differs a little from its parent (or from its own previous revision) costs only the difference.
Chains are at most `CHAIN` frames long (then a frame stands alone), so reading any frame
decompresses at most `CHAIN` frames.

A frame counts only once whole with a matching CRC: anything else is an `IncompleteFrame` (a torn
append, or one still being written). A whole frame that does not parse is DATA_LOSS.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from turnkit.errors import TurnkitError

__all__ = [
    "CHAIN",
    "DEFLATE",
    "HEAD",
    "JOURNAL_FORMAT_VERSION",
    "LEASE",
    "LOG",
    "MAGIC",
    "RAW",
    "RECORD",
    "TEXT_ERRORS",
    "IncompleteFrame",
    "NameEncoder",
    "base_fields",
    "check_header",
    "compress_payload",
    "data_loss",
    "decompress_payload",
    "encode_frame",
    "encode_header",
    "encode_string",
    "frame_size",
    "head_body",
    "header_tenant",
    "lease_body",
    "log_body",
    "read_frame",
    "read_lease",
    "read_payload_fields",
    "read_uvarint",
    "record_body",
    "uvarint",
]

MAGIC: Final = b"turnkit-journal\n"
JOURNAL_FORMAT_VERSION: Final = 1
CHAIN: Final = 16  # longest chain of frames compressed against one another
RECORD, LOG, LEASE, HEAD = 1, 2, 3, 4  # frame kinds
RAW, DEFLATE = 0, 1  # payload codecs
MAX_BODY: Final = 1 << 31
TEXT_ERRORS: Final = "surrogatepass"  # the UTF-8 error handler that stores any str exactly
_DOUBLE: Final = struct.Struct("<d")
_ZDICT_MAX: Final = 32768  # deflate's window: older dictionary bytes cannot be referred to


def data_loss(message: str) -> TurnkitError:
    """The error for a journal that holds something this code cannot read."""
    return TurnkitError("DATA_LOSS", message, public=False)


class IncompleteFrame(Exception):
    """A frame that is not (yet) whole: it runs past the bytes read, or its CRC does not match."""


# --- primitives ------------------------------------------------------------------------------------


def uvarint(n: int) -> bytes:
    """`n` as an unsigned LEB128 varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; `IncompleteFrame` if it runs past `end`."""
    if pos >= end:
        raise IncompleteFrame
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value, shift = b & 0x7F, 7
    pos += 1
    while True:
        if pos >= end or shift > 63:
            raise IncompleteFrame
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def encode_string(value: str) -> bytes:
    """A string field: its UTF-8 length, then its UTF-8."""
    raw = value.encode("utf-8", TEXT_ERRORS)
    return uvarint(len(raw)) + raw


# --- header and frames -----------------------------------------------------------------------------


def encode_header(tenant: str) -> bytes:
    """The header of a tenant's journal."""
    head = MAGIC + uvarint(JOURNAL_FORMAT_VERSION) + encode_string(tenant)
    return head + zlib.crc32(head).to_bytes(4, "little")


def check_header(header: bytes, file_name: str, tenant: str) -> int:
    """The header's length, once checked to be a whole version-1 header of `tenant`'s journal."""
    if not header.startswith(MAGIC):
        raise data_loss(f"{file_name} is not a turnkit journal")
    try:
        version, pos = read_uvarint(header, len(MAGIC), len(header))
        if version != JOURNAL_FORMAT_VERSION:
            raise data_loss(
                f"{file_name} has journal format version {version}; "
                f"this turnkit reads version {JOURNAL_FORMAT_VERSION}"
            )
        n, pos = read_uvarint(header, pos, len(header))
        found = header[pos : pos + n]
        pos += n
        if pos + 4 > len(header) or zlib.crc32(header[:pos]) != int.from_bytes(
            header[pos : pos + 4], "little"
        ):
            raise IncompleteFrame
    except IncompleteFrame:
        raise data_loss(f"{file_name} has a damaged header") from None
    if found.decode("utf-8", TEXT_ERRORS) != tenant:
        raise data_loss(f"{file_name} holds another tenant's data")
    return pos + 4


def header_tenant(header: bytes) -> str:
    """The tenant a journal's header names; ValueError if it is no whole turnkit journal header."""
    if not header.startswith(MAGIC):
        raise ValueError("not a turnkit journal")
    try:
        _, pos = read_uvarint(header, len(MAGIC), len(header))
        n, pos = read_uvarint(header, pos, len(header))
    except IncompleteFrame:
        raise ValueError("a torn journal header") from None
    if pos + n > len(header):
        raise ValueError("a torn journal header")
    return header[pos : pos + n].decode("utf-8", TEXT_ERRORS)


def encode_frame(body: bytes) -> bytes:
    """A frame: the body's length, the body, and the CRC of both."""
    head = uvarint(len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + body + crc.to_bytes(4, "little")


def frame_size(buf: bytes) -> int | None:
    """The size of the frame starting `buf`, from its length field; None if that is torn or absurd."""
    try:
        n, pos = read_uvarint(buf, 0, len(buf))
    except IncompleteFrame:
        return None
    return None if n > MAX_BODY else pos + n + 4


def read_frame(buf: bytes, pos: int) -> tuple[int, int]:
    """Where the body of the frame at `buf[pos:]` starts and ends, once the frame is seen whole with a
    matching CRC; `IncompleteFrame` otherwise."""
    end = len(buf)
    n, body = read_uvarint(buf, pos, end)
    stop = body + n
    if n == 0 or n > MAX_BODY or stop + 4 > end:
        raise IncompleteFrame
    if zlib.crc32(memoryview(buf)[pos:stop]) != int.from_bytes(buf[stop : stop + 4], "little"):
        raise IncompleteFrame
    return body, stop


# --- bodies ----------------------------------------------------------------------------------------


class NameEncoder:
    """Encodes the names of one frame against a journal's name table, numbering the new ones as a
    reader will; `new` holds them, for the writer to add to its table once the frame is written."""

    __slots__ = ("first", "new", "table")

    def __init__(self, table: dict[str, int], count: int) -> None:
        self.table = table
        self.first = count
        self.new: dict[str, int] = {}

    def ref(self, name: str | None) -> bytes:
        """A name field: none, a number already given, or the name spelled (taking the next number)."""
        if name is None:
            return b"\x00"
        n = self.table.get(name)
        if n is None:
            n = self.new.get(name)
        if n is not None:
            return uvarint(n + 2)
        self.new[name] = self.first + len(self.new)
        return b"\x01" + encode_string(name)


def base_fields(back: int, depth: int) -> tuple[bytes, bytes]:
    """The base and depth fields of a frame `back` bytes after its base (0: it stands alone)."""
    return (b"\x00", b"\x00") if back == 0 else (uvarint(back), uvarint(depth))


def record_body(
    names: NameEncoder,
    key: str,
    rev: int,
    head_of: str | None,
    base: tuple[bytes, bytes],
    codec: int,
    payload: bytes,
) -> bytes:
    """The body of a record frame."""
    return b"".join(
        (bytes((RECORD,)), names.ref(key), uvarint(rev), names.ref(head_of), *base, bytes((codec,)), payload)
    )


def log_body(
    names: NameEncoder,
    log_id: str,
    start: int,
    count: int,
    base: tuple[bytes, bytes],
    codec: int,
    payload: bytes,
) -> bytes:
    """The body of a log frame: `count` entries from index `start` on."""
    fields = (names.ref(log_id), uvarint(start), uvarint(count), *base)
    return b"".join((bytes((LOG,)), *fields, bytes((codec,)), payload))


def lease_body(names: NameEncoder, name: str, owner: str, expires: float) -> bytes:
    """The body of a lease frame (owner "" releases the lease)."""
    return bytes((LEASE,)) + names.ref(name) + encode_string(owner) + _DOUBLE.pack(expires)


def head_body(names: NameEncoder, session: str, key: str) -> bytes:
    """The body of a head frame: `key` is the latest snapshot of `session`."""
    return bytes((HEAD,)) + names.ref(session) + names.ref(key)


def read_payload_fields(buf: bytes, i: int, stop: int, offset: int) -> tuple[int, int, int, int]:
    """The base distance, depth and codec of a record or log frame, and where its payload starts."""
    back, i = read_uvarint(buf, i, stop)
    depth, i = read_uvarint(buf, i, stop)
    if i >= stop or (depth and not back):
        raise data_loss(f"a journal frame at offset {offset} is malformed")
    codec = buf[i]
    if codec not in (RAW, DEFLATE):
        raise data_loss(f"a journal frame at offset {offset} has unknown codec {codec}")
    return back, depth, codec, i + 1


def read_lease(buf: bytes, i: int, stop: int, offset: int) -> tuple[str, float]:
    """The owner and expiry of a lease frame, read from after its name."""
    n_owner, i = read_uvarint(buf, i, stop)
    owner = bytes(buf[i : i + n_owner]).decode("utf-8", TEXT_ERRORS)
    i += n_owner
    if i + 8 != stop:
        raise data_loss(f"a lease frame at offset {offset} is malformed")
    (expires,) = _DOUBLE.unpack_from(buf, i)
    return owner, expires


# --- payloads --------------------------------------------------------------------------------------


def compress_payload(plain: bytes, zdict: bytes | None) -> tuple[int, bytes]:
    """The codec and payload for `plain`: raw deflate primed with `zdict`, or as is when that is no smaller."""
    size = len(plain) + (len(zdict) if zdict else 0)
    # A small window and hash (for small texts) make a compressor ~5x cheaper to set up.
    wbits = max(10, min(15, (size + 300).bit_length()))
    mem = 3 if size < (16 << 10) else 8
    level = 6 if len(plain) < (1 << 20) else 1
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem, zlib.Z_DEFAULT_STRATEGY, zdict[-_ZDICT_MAX:])
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem)
    packed = c.compress(plain) + c.flush()
    return (DEFLATE, packed) if len(packed) < len(plain) else (RAW, plain)


def decompress_payload(codec: int, payload: bytes, zdict: bytes | None) -> bytes:
    """The plaintext of a payload (`zdict`: its base frame's text, for a compressed one)."""
    if codec == RAW:
        return payload
    try:
        d = zlib.decompressobj(-15, zdict[-_ZDICT_MAX:]) if zdict else zlib.decompressobj(-15)
        plain = d.decompress(payload)
    except zlib.error as exc:
        raise data_loss(f"a journal frame does not decompress: {exc}") from None
    if not d.eof or d.unused_data:
        raise data_loss("a journal frame does not decompress to its end")
    return plain
