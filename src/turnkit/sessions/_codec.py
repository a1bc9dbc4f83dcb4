"""How the SQLite, PostgreSQL and Redis stores encode the engine's JSON texts: part of their formats.

A stored value is the text itself, or its compressed form when that is shorter: the marker byte
0x01, then the text's UTF-8 compressed with raw DEFLATE primed with `DICTIONARY`. Where a store
keeps a value as bytes (PostgreSQL `bytea`, Redis), a first byte below 0x20 is a marker, so an
uncompressed text is stored as its UTF-8, with the marker 0x00 in front only if it starts with a
control character (JSON never does). SQLite keeps an uncompressed text as TEXT and the compressed
form as a BLOB (`pack`); the other stores always hold bytes (`encode`). `decode` reads either, and
refuses any other marker, or a compressed value that does not decompress, with DATA_LOSS.

Records compress to between a third and a half (the dictionary holds their field names; ids do not
compress much); messages to what their text allows (prose to about half, random letters to 80%).
Compressing costs about 10 to 15 us per value, decompressing about 4 us.
"""

from __future__ import annotations

import zlib
from typing import Final

from turnkit.errors import TurnkitError

__all__ = ["DEFLATE_V1", "DICTIONARY", "RAW", "decode", "encode", "pack"]

RAW: Final = b"\x00"
DEFLATE_V1: Final = b"\x01"
_MARKER_LIMIT: Final = 0x20  # first bytes below this are markers; UTF-8 text of a printable start never is

# What records and messages usually say, most common last (DEFLATE reaches the end cheapest).
# Part of the stores' formats: never change it; a new dictionary needs a new marker byte.
DICTIONARY: Final = "".join(
    (
        " the and to of a in is that it for you with on as this be are",
        '"metadata":{',
        '"reasoning":"',
        '"media":{"url":"data:image/png;base64,","contentType":"image/',
        '"data":{',
        '"custom":{',
        '{"role":"system","content":[{"text":"',
        '{"role":"tool","content":[{"toolResponse":{"name":"","ref":"","output":{"',
        '{"role":"model","content":[{"toolRequest":{"name":"","ref":"","input":{"',
        '{"role":"user","content":[{"text":"',
        '{"role":"model","content":[{"text":"',
        '"}]}',
        '"error":{"status":"","message":"',
        '"heartbeatAt":"20',
        '"status":"pending"',
        '"status":"aborted","finishReason":"aborted"',
        '"status":"failed","finishReason":"failed"',
        '"finishReason":"interrupted"',
        '"aset":[[0,{"name":"","parts":[{"text":"',
        '"aadd":[{"name":"","parts":[{"text":"',
        '"anull":true',
        '"cpatch":[{"op":"add","path":"/',
        '{"op":"replace","path":"/","value":',
        '"cval":',
        '"sid":"',
        '"snapshotId":"',
        '"base":"',
        "T00:00:00.000000Z",
        "+00:00",
        '"custom":null,"arts":[]}}',
        '{"v":1,"srev":1,"meta":{"sessionId":"',
        '","parentId":"',
        '","createdAt":"20',
        '","updatedAt":"20',
        '","status":"completed","finishReason":"stop"},"state":{"msgs":[["',
        '",2]],"depth":0,',
        '"depth":1,"psrev":1}}',
    )
).encode("utf-8")
_MIN_COMPRESSIBLE: Final = 24  # shorter texts do not get shorter
_SMALL_TEXT: Final = 4096  # texts up to this size compress with a small window, which sets up much faster


def _compress(raw: bytes) -> bytes | None:
    """The compressed form of `raw` (marker included), or None when it is not shorter."""
    if len(raw) < _MIN_COMPRESSIBLE:
        return None
    small = len(raw) <= _SMALL_TEXT
    # A window big enough for the dictionary and a short text; memLevel: hash table size.
    packer = zlib.compressobj(
        6, zlib.DEFLATED, -12 if small else -15, 4 if small else 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
    )
    packed = DEFLATE_V1 + packer.compress(raw) + packer.flush()
    return packed if len(packed) < len(raw) else None


def pack(text: str) -> str | bytes:
    """What a store with separate text and byte values (SQLite) keeps: the text, or its compressed form."""
    packed = _compress(text.encode("utf-8"))
    return text if packed is None else packed


def encode(text: str) -> bytes:
    """What a store of bytes keeps for `text`: its compressed form, or its UTF-8 (marked if need be)."""
    raw = text.encode("utf-8")
    packed = _compress(raw)
    if packed is not None:
        return packed
    return RAW + raw if raw and raw[0] < _MARKER_LIMIT else raw


def decode(value: str | bytes | bytearray | memoryview) -> str:
    """The text a stored value (from `pack` or `encode`) holds."""
    if isinstance(value, str):
        return value
    value = bytes(value)
    try:
        if not value or value[0] >= _MARKER_LIMIT:
            return value.decode("utf-8")
        if value[0] == RAW[0]:
            return value[1:].decode("utf-8")
        if value[0] != DEFLATE_V1[0]:
            raise TurnkitError("DATA_LOSS", f"stored value has unknown encoding {value[:1]!r}", public=False)
        unpacker = zlib.decompressobj(-15, DICTIONARY)
        raw = unpacker.decompress(memoryview(value)[1:]) + unpacker.flush()
        if not unpacker.eof or unpacker.unused_data:
            raise zlib.error("the compressed stream is cut short or followed by other bytes")
        return raw.decode("utf-8")
    except (zlib.error, UnicodeDecodeError) as exc:
        raise TurnkitError("DATA_LOSS", f"stored value does not decode: {exc}", public=False) from exc
