"""The wire format: Confluent framing around schemaless Avro, as Rubin's alert stream uses it.

    byte 0      magic byte 0
    bytes 1-4   schema id, unsigned 32-bit big-endian (an id of ``schemas/registry.json``)
    bytes 5-    the record, Avro binary encoding without a container (fastavro schemaless)

Any Avro reader decodes a message from the ``.avsc`` file its id names: skip five
bytes and read. The schemas are data in ``schemas/``; each is parsed once.

A reader resolves the writer's schema (the id in the message) to its own current
version of the same subject (Avro schema resolution: fields added with defaults
are filled, fields it does not know are skipped), so producers and consumers of
compatible versions interoperate in both directions.

Every failure is a :class:`CodecError` (a :class:`CalibstreamError`) with a
readable reason: :class:`UnknownSchemaError` for an id the registry does not
list, :class:`UndecodableError` for bytes that are not a framed Avro record of
the schema they name, :class:`UnexpectedSubjectError` for a well-formed message
of another subject than the caller expects, :class:`EncodeError` for a record
that does not fit its schema. Consumers send the first three to the dead-letter
topic with the raw bytes.
"""

from __future__ import annotations

import functools
import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
from fastavro.validation import validate

from calibstream.errors import CalibstreamError

#: The folder of ``.avsc`` files and ``registry.json``.
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
REGISTRY_FILE = "registry.json"
MAGIC = 0
HEADER = struct.Struct(">BI")  # magic byte, schema id (big-endian)


class CodecError(CalibstreamError):
    """A message cannot be encoded or decoded."""

    kind = "codec"

    def __init__(
        self, reason: str, *, where: str | None = None, schema_id: int | None = None
    ) -> None:
        super().__init__(reason, where=where)
        self.schema_id = schema_id


class UnknownSchemaError(CodecError):
    """The framing names a schema id the registry does not list."""

    kind = "unknown_schema"


class UndecodableError(CodecError):
    """Not a framed Avro record: bad magic byte, truncated, or not Avro of its schema."""

    kind = "undecodable"


class UnexpectedSubjectError(CodecError):
    """A valid message of another subject than the one expected (e.g. on the wrong topic)."""

    kind = "unexpected_subject"


class EncodeError(CodecError):
    """A record that does not fit its schema (a producer's bug)."""

    kind = "encode"


@dataclass(frozen=True)
class Schema:
    """One registered schema version."""

    id: int
    subject: str
    version: int
    file: str
    parsed: Any  # fastavro's parsed schema


class Decoded(NamedTuple):
    schema_id: int
    subject: str
    version: int
    record: dict


class SchemaRegistry:
    """The ids of one ``registry.json`` and their parsed ``.avsc`` files.

    ``reader_versions`` pins the version a consumer reads as (per subject);
    by default it is the highest version listed, the "current" one.
    """

    def __init__(
        self,
        directory: str | Path = SCHEMAS_DIR,
        reader_versions: Mapping[str, int] | None = None,
    ) -> None:
        self.directory = Path(directory)
        try:
            listing = json.loads((self.directory / REGISTRY_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise CodecError(
                f"cannot read the schema registry ({exc})", where=str(self.directory)
            ) from exc
        self._by_id: dict[int, Schema] = {}
        versions: dict[str, dict[int, Schema]] = {}
        for key, entry in listing.items():
            schema_id = int(key)
            if schema_id in self._by_id:
                raise CodecError(f"schema id {schema_id} is listed twice", where=REGISTRY_FILE)
            if not 0 <= schema_id < 2**32:
                raise CodecError(f"schema id {schema_id} out of range", where=REGISTRY_FILE)
            subject, version, file = entry["subject"], int(entry["version"]), entry["file"]
            if version in versions.get(subject, {}):
                raise CodecError(
                    f"{subject} version {version} is listed twice", where=REGISTRY_FILE
                )
            try:
                text = (self.directory / file).read_text()
                parsed = fastavro.parse_schema(json.loads(text))
            except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
                raise CodecError(f"cannot load schema {file} ({exc})", where=file) from exc
            schema = Schema(schema_id, subject, version, file, parsed)
            self._by_id[schema_id] = schema
            versions.setdefault(subject, {})[version] = schema
        self._current: dict[str, Schema] = {}
        pinned = dict(reader_versions or {})
        for subject, by_version in versions.items():
            version = pinned.pop(subject, max(by_version))
            if version not in by_version:
                raise CodecError(f"{subject} has no version {version}", where=REGISTRY_FILE)
            self._current[subject] = by_version[version]
        if pinned:
            raise CodecError(f"unknown subjects {sorted(pinned)}", where=REGISTRY_FILE)

    # ------------------------------------------------------------ lookups

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(sorted(self._current))

    def current(self, subject: str) -> Schema:
        """The version this process writes and reads ``subject`` as."""
        try:
            return self._current[subject]
        except KeyError:
            raise EncodeError(f"no schema for subject {subject!r}", where=subject) from None

    def by_id(self, schema_id: int) -> Schema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(
                f"schema id {schema_id} is not in {self.directory / REGISTRY_FILE}",
                where="schema id",
                schema_id=schema_id,
            ) from None

    def schema_for(self, subject_or_id: str | int) -> Schema:
        if isinstance(subject_or_id, int):
            return self.by_id(subject_or_id)
        return self.current(subject_or_id)

    # ------------------------------------------------------------ the wire

    def encode(self, subject_or_id: str | int, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` with the subject's current schema (or the schema of that id)."""
        schema = self.schema_for(subject_or_id)
        buffer = io.BytesIO()
        buffer.write(HEADER.pack(MAGIC, schema.id))
        try:
            # validate first: fastavro's writer accepts out-of-range ints and
            # unknown fields, and its strict=True overrides strict_allow_default.
            validate(record, schema.parsed, raise_errors=True, strict=True)
            fastavro.schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, ...
            raise EncodeError(
                f"record does not fit {schema.file} ({_described(exc)})",
                where=schema.subject,
                schema_id=schema.id,
            ) from exc
        return buffer.getvalue()

    def decode(self, data: bytes, expected_subject: str | None = None) -> Decoded:
        """``(schema_id, subject, version, record)``, the record in the reader's current version.

        ``version`` is the writer's version (the one in the message).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UndecodableError(f"expected bytes, got {type(data).__name__}", where="value")
        data = bytes(data)
        if len(data) < HEADER.size:
            raise UndecodableError(
                f"{len(data)} bytes: shorter than the 5-byte framing", where="framing"
            )
        magic, schema_id = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise UndecodableError(
                f"magic byte is {magic}, expected {MAGIC}: not Confluent-framed Avro",
                where="framing",
            )
        writer = self.by_id(schema_id)
        if expected_subject is not None and writer.subject != expected_subject:
            raise UnexpectedSubjectError(
                f"schema id {schema_id} is {writer.subject} v{writer.version}, "
                f"expected {expected_subject}",
                where="schema id",
                schema_id=schema_id,
            )
        reader = self._current[writer.subject]
        body = io.BytesIO(data)
        body.seek(HEADER.size)
        try:
            record = fastavro.schemaless_reader(
                body, writer.parsed, None if reader is writer else reader.parsed
            )
            validate(record, reader.parsed, raise_errors=True)
        except Exception as exc:  # EOF, bad varint, bad UTF-8, bad union index, ...
            raise UndecodableError(
                f"body is not a {writer.subject} v{writer.version} record ({_described(exc)})",
                where="body",
                schema_id=schema_id,
            ) from exc
        if body.tell() != len(data):
            raise UndecodableError(
                f"{len(data) - body.tell()} bytes left after the {writer.subject} record",
                where="body",
                schema_id=schema_id,
            )
        return Decoded(schema_id, writer.subject, writer.version, record)


#: Characters of an exception's text kept in a codec error (fastavro's quote the datum,
#: which may be megabytes of column bytes).
ERROR_TEXT = 1000


def _described(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_TEXT else f"{text[:ERROR_TEXT]}… [{len(text)} characters]"


@functools.cache
def default_registry() -> SchemaRegistry:
    """The project's ``schemas/``, loaded and parsed once per process."""
    return SchemaRegistry(SCHEMAS_DIR)


def encode(subject_or_id: str | int, record: Mapping[str, Any]) -> bytes:
    """Confluent-framed Avro of ``record`` (see :meth:`SchemaRegistry.encode`)."""
    return default_registry().encode(subject_or_id, record)


def decode(data: bytes, expected_subject: str | None = None) -> Decoded:
    """``(schema_id, subject, version, record)`` (see :meth:`SchemaRegistry.decode`)."""
    return default_registry().decode(data, expected_subject)


def schema_id_of(data: bytes) -> int | None:
    """The schema id in a message's framing, or None when it has none."""
    if len(data) >= HEADER.size and data[0] == MAGIC:
        return HEADER.unpack_from(data)[1]
    return None
