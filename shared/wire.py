"""Stream entry encoding: fields ``type`` and ``data`` (JSON of the message, tag included)."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.errors import DecodeError
from shared.messages import FAMILIES, Message

_encoder = msgspec.json.Encoder()


def encode(msg: Message) -> dict[str, bytes]:
    """The fields of a stream entry for ``msg``."""
    tag = type(msg).__struct_config__.tag
    return {"type": str(tag).encode(), "data": _encoder.encode(msg)}


class StreamDecoder:
    """Decodes entries of one logical stream into its message family (built once, reused)."""

    def __init__(self, logical_stream: str) -> None:
        family = FAMILIES[logical_stream]
        self.stream = logical_stream
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(family)  # type: ignore[arg-type]

    def decode(self, fields: dict[bytes, bytes] | dict[str, str]) -> Message:
        """Decode one entry's fields; raises :class:`DecodeError` naming what is wrong."""
        norm = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()
        }
        data = norm.get("data")
        if data is None:
            raise DecodeError(f"entry of {self.stream} has no 'data' field")
        try:
            msg = self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise DecodeError(f"invalid {self.stream} message: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(f"malformed JSON in {self.stream} entry: {exc}") from exc
        declared = norm.get("type")
        if declared is not None:
            declared_s = declared.decode() if isinstance(declared, bytes) else declared
            tag = type(msg).__struct_config__.tag
            if declared_s != tag:
                raise DecodeError(f"entry type {declared_s!r} does not match data tag {tag!r}")
        return msg
