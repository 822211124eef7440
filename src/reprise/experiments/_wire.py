"""The wire format between an experiment and its worker processes: length-prefixed pickles.

(Kept apart from ``_worker`` so the package never imports the module ``python -m`` runs.)
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

__all__ = ["HEADER", "decode_header", "encode_message"]

HEADER = struct.Struct(">Q")


def encode_message(message: Any) -> bytes:
    """A message as sent on the wire: 8-byte big-endian length, then the pickle."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode_header(header: bytes) -> int:
    """The body length announced by a header."""
    return int(HEADER.unpack(header)[0])
