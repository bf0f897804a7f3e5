"""The wire codec (streams.codec): the schemas it loads, Confluent framing, round trips,
schema evolution in both directions, typed errors for every kind of bad input, and that a
plain fastavro reader with nothing but the ``.avsc`` file decodes what the codec writes.

Records are derived from the schemas themselves (:func:`example_record`), so a field added
to a schema is exercised without touching this file.
"""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest

from calibstream.errors import CalibstreamError
from streams import codec
from streams.codec import (
    CodecError,
    EncodeError,
    SchemaRegistry,
    UndecodableError,
    UnexpectedSubjectError,
    UnknownSchemaError,
    schema_id_of,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicates, f"registry.json lists ids {duplicates} more than once"
    return dict(pairs)


REGISTRY_TEXT = (SCHEMAS / "registry.json").read_text()
REGISTRY = json.loads(REGISTRY_TEXT, object_pairs_hook=_no_duplicate_keys)
ENTRIES = sorted((int(key), entry) for key, entry in REGISTRY.items())
SUBJECTS = sorted({entry["subject"] for _, entry in ENTRIES})
#: subject -> its highest registered version's entry (what the default registry writes)
CURRENT = {
    subject: max(
        ((i, e) for i, e in ENTRIES if e["subject"] == subject), key=lambda ie: ie[1]["version"]
    )
    for subject in SUBJECTS
}
CE = "characterized_exposure"


def schema_json(file: str, directory: Path = SCHEMAS) -> dict:
    return json.loads((directory / file).read_text())


# ------------------------------------------------------------------ example records

#: distinctive, exactly representable values: a round trip that drops or mangles one shows
ZERO = {
    "null": None,
    "boolean": False,
    "int": 0,
    "long": 0,
    "float": 0.0,
    "double": 0.0,
    "string": "",
    "bytes": b"",
}
RICH = {
    "null": None,
    "boolean": True,
    "int": -(2**31),
    "long": 2**40 + 3,
    "float": 0.5,
    "double": -1.25e-300,
    "string": "r-é\u00b0\U0001f52d",
    "bytes": b"\x00\xff\x80\n",
}


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _example(schema: Any, named: dict[str, dict], namespace: str, rich: bool) -> Any:
    if isinstance(schema, str):
        if schema in ZERO:
            return (RICH if rich else ZERO)[schema]
        return _example(named[_fullname(schema, namespace)], named, namespace, rich)
    if isinstance(schema, list):  # a union: its first branch, or the first non-null one
        branches = [b for b in schema if b != "null"] if rich else schema
        return _example(branches[0], named, namespace, rich)
    kind = schema["type"]
    assert "logicalType" not in schema, "example_record does not know logical types"
    if kind in ("record", "enum", "fixed"):
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        named[full] = schema
        inner = full.rpartition(".")[0]
        if kind == "enum":
            return schema["symbols"][-1 if rich else 0]
        if kind == "fixed":
            return bytes(range(schema["size"])) if rich else bytes(schema["size"])
        record = {}
        for field in schema["fields"]:
            if not rich and "default" in field:
                record[field["name"]] = copy.deepcopy(field["default"])
            else:
                record[field["name"]] = _example(field["type"], named, inner, rich)
        return record
    if kind == "array":
        return [_example(schema["items"], named, namespace, rich)] if rich else []
    if kind == "map":
        return {"key-ü": _example(schema["values"], named, namespace, rich)} if rich else {}
    return _example(kind, named, namespace, rich)  # {"type": "long"}


def example_record(schema: dict, *, rich: bool = False) -> dict:
    """A valid record of the Avro schema ``schema`` (its JSON, not parsed), every field present.

    ``rich=False``: defaults where the schema has them, zero values elsewhere, empty arrays
    and maps, the first union branch. ``rich=True``: no defaults, non-null union branches,
    one element per array and map, extreme but exact values.
    """
    return _example(schema, {}, "", rich)


def required_only(schema: dict) -> dict:
    """The zero-valued record without the top-level fields that have a default."""
    record = example_record(schema)
    for field in schema["fields"]:
        if "default" in field:
            del record[field["name"]]
    return record


def frame(schema_id: int, body: bytes = b"") -> bytes:
    return bytes([0]) + schema_id.to_bytes(4, "big") + body


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry(SCHEMAS)


@pytest.fixture(scope="module")
def ce_message(registry: SchemaRegistry) -> bytes:
    return registry.encode(CE, example_record(schema_json(CURRENT[CE][1]["file"]), rich=True))


# ------------------------------------------------------------------ 1. the schemas


def test_registry_ids_are_unique_and_file_names_follow_subject_and_version():
    assert ENTRIES, "registry.json lists no schema"
    for key in REGISTRY:
        assert key == str(int(key)), f"id {key!r} is not a canonical decimal"
    ids = [schema_id for schema_id, _ in ENTRIES]
    assert len(ids) == len(set(ids))
    assert all(0 <= i < 2**32 for i in ids)
    pairs = [(e["subject"], e["version"]) for _, e in ENTRIES]
    assert len(pairs) == len(set(pairs)), "a subject version is registered under two ids"
    for schema_id, entry in ENTRIES:
        assert isinstance(entry["version"], int) and entry["version"] >= 1, schema_id
        assert entry["file"] == f"{entry['subject']}.v{entry['version']}.avsc", schema_id
    listed = {entry["file"] for _, entry in ENTRIES}
    on_disk = {path.name for path in SCHEMAS.glob("*.avsc")}
    assert on_disk == listed, "schema files not in registry.json, or listed but missing"


@pytest.mark.parametrize("schema_id,entry", ENTRIES, ids=[e["file"] for _, e in ENTRIES])
def test_every_schema_parses_alone_with_plain_fastavro(schema_id, entry):
    # a fresh named_schemas each time: a file must not rely on types defined in another
    schema = schema_json(entry["file"])
    parsed = fastavro.parse_schema(schema, named_schemas={})
    assert parsed["type"] == "record"
    # every version of a subject is the same named record, or Avro resolution fails
    first = min(
        (e for _, e in ENTRIES if e["subject"] == entry["subject"]), key=lambda e: e["version"]
    )
    assert schema["name"] == schema_json(first["file"])["name"]


def test_registry_loads_every_subject_at_its_highest_version(registry):
    assert registry.subjects == tuple(SUBJECTS)
    for subject, (schema_id, entry) in CURRENT.items():
        current = registry.current(subject)
        assert (current.id, current.version, current.file) == (
            schema_id,
            entry["version"],
            entry["file"],
        )
        assert registry.by_id(schema_id) is current


# ------------------------------------------------------------------ 2. round trips


@pytest.mark.parametrize("rich", [False, True], ids=["defaults", "rich"])
@pytest.mark.parametrize("subject", SUBJECTS)
def test_round_trip_and_framing(registry, subject, rich):
    schema_id, entry = CURRENT[subject]
    record = example_record(schema_json(entry["file"]), rich=rich)
    message = registry.encode(subject, record)

    assert message[0] == 0
    assert message[1:5] == struct.pack(">I", schema_id)
    assert schema_id_of(message) == schema_id
    assert registry.encode(schema_id, record) == message, "by id and by subject differ"
    assert codec.encode(subject, record) == message, "module-level encode differs"

    decoded = registry.decode(message, expected_subject=subject)
    assert decoded == (schema_id, subject, entry["version"], record)
    assert decoded.record == record
    assert codec.decode(message) == decoded
    # bytearray and memoryview are bytes too (Kafka clients hand out either)
    assert registry.decode(bytearray(message)) == decoded
    assert registry.decode(memoryview(message)) == decoded


def test_framing_is_unsigned_big_endian(tmp_path):
    """Ids whose byte order is visible, and one above 2**31 (signed packing would fail)."""
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    listing = {
        str(0x01020304): {"subject": CE, "version": 1, "file": f"{CE}.v1.avsc"},
        str(0xFFFFFFFE): {"subject": "detection", "version": 1, "file": "detection.v1.avsc"},
    }
    (tmp_path / "schemas" / "registry.json").write_text(json.dumps(listing))
    registry = SchemaRegistry(tmp_path / "schemas")
    record = example_record(schema_json(f"{CE}.v1.avsc"), rich=True)
    message = registry.encode(CE, record)
    assert message[:5] == b"\x00\x01\x02\x03\x04"
    assert registry.decode(message).record == record

    detection = example_record(schema_json("detection.v1.avsc"))
    message = registry.encode("detection", detection)
    assert message[:5] == b"\x00\xff\xff\xff\xfe"
    assert schema_id_of(message) == 0xFFFFFFFE
    assert registry.decode(message) == (0xFFFFFFFE, "detection", 1, detection)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_fields_with_defaults_may_be_omitted(registry, subject):
    schema = schema_json(CURRENT[subject][1]["file"])
    message = registry.encode(subject, required_only(schema))
    assert registry.decode(message).record == example_record(schema)


# ------------------------------------------------------------------ 3. schema evolution


def make_v2(tmp_path: Path, change) -> Path:
    """A copy of schemas/ with a characterized_exposure v2 = change(v1) under a new id."""
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, directory)
    v2 = change(schema_json(f"{CE}.v1.avsc"))
    (directory / f"{CE}.v2.avsc").write_text(json.dumps(v2, indent=2))
    listing = json.loads((directory / "registry.json").read_text())
    new_id = max(map(int, listing)) + 1
    listing[str(new_id)] = {"subject": CE, "version": 2, "file": f"{CE}.v2.avsc"}
    (directory / "registry.json").write_text(json.dumps(listing, indent=2))
    return directory


def add_seeing(schema: dict) -> dict:
    schema["fields"].append(
        {"name": "seeing_arcsec", "type": ["null", "double"], "default": None, "doc": "FWHM"}
    )
    return schema


def drop_attributes(schema: dict) -> dict:
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "attributes"]
    return schema


V1_RECORD = example_record(schema_json(f"{CE}.v1.avsc"), rich=True)
V1_ID = next(i for i, e in ENTRIES if e["subject"] == CE and e["version"] == 1)


def test_evolution_added_field_with_default(tmp_path):
    directory = make_v2(tmp_path, add_seeing)
    current = SchemaRegistry(directory)
    pinned = SchemaRegistry(directory, reader_versions={CE: 1})
    v2_id = current.current(CE).id
    assert current.current(CE).version == 2 and v2_id != V1_ID
    assert pinned.current(CE).id == V1_ID

    # (a) a v1 consumer reads a v2 message: the field it does not know is skipped
    v2_record = {**V1_RECORD, "seeing_arcsec": 0.75}
    message = current.encode(CE, v2_record)
    assert schema_id_of(message) == v2_id
    decoded = pinned.decode(message, expected_subject=CE)
    assert decoded == (v2_id, CE, 2, V1_RECORD)
    assert current.decode(message).record == v2_record

    # (b) a v2 consumer reads a v1 message: the new field takes its default
    message = pinned.encode(CE, V1_RECORD)
    assert schema_id_of(message) == V1_ID
    assert current.encode(V1_ID, V1_RECORD) == message, "encode by id writes that version"
    decoded = current.decode(message, expected_subject=CE)
    assert decoded == (V1_ID, CE, 1, {**V1_RECORD, "seeing_arcsec": None})
    assert pinned.decode(message).record == V1_RECORD


def test_evolution_removed_field_that_had_a_default(tmp_path):
    directory = make_v2(tmp_path, drop_attributes)
    current = SchemaRegistry(directory)
    pinned = SchemaRegistry(directory, reader_versions={CE: 1})
    v2_id = current.current(CE).id
    without = {k: v for k, v in V1_RECORD.items() if k != "attributes"}
    assert V1_RECORD["attributes"], "the v1 record must carry attributes to drop"

    # a v1 consumer reads a v2 message (no attributes written): v1's default {} is filled
    message = current.encode(CE, without)
    assert schema_id_of(message) == v2_id
    assert pinned.decode(message) == (v2_id, CE, 2, {**without, "attributes": {}})

    # a v2 consumer reads a v1 message: the attributes it no longer knows are skipped
    message = pinned.encode(CE, V1_RECORD)
    assert current.decode(message) == (V1_ID, CE, 1, without)

    # v2 refuses to write the field it dropped
    with pytest.raises(EncodeError, match="attributes"):
        current.encode(CE, V1_RECORD)


def test_evolution_incompatible_version_is_undecodable_not_a_crash(tmp_path):
    """A v2 adding a field WITHOUT a default cannot read v1 messages: a typed error."""

    def add_required(schema: dict) -> dict:
        schema["fields"].append({"name": "seeing_arcsec", "type": "double"})
        return schema

    current = SchemaRegistry(make_v2(tmp_path, add_required))
    message = codec.encode(CE, V1_RECORD)
    with pytest.raises(UndecodableError) as info:
        current.decode(message)
    assert info.value.schema_id == V1_ID
    assert f"{CE} v1" in str(info.value)


def test_reader_versions_must_exist(tmp_path):
    with pytest.raises(CodecError, match="no version 9"):
        SchemaRegistry(SCHEMAS, reader_versions={CE: 9})
    with pytest.raises(CodecError, match="unknown subjects"):
        SchemaRegistry(SCHEMAS, reader_versions={"no_such_subject": 1})
    with pytest.raises(CodecError, match="cannot read the schema registry"):
        SchemaRegistry(tmp_path)


# ------------------------------------------------------------------ 4. bad input


def test_error_classes_are_calibstream_errors():
    kinds = set()
    for cls in (UnknownSchemaError, UndecodableError, UnexpectedSubjectError, EncodeError):
        assert issubclass(cls, CodecError)
        assert issubclass(cls, CalibstreamError)
        kinds.add(cls.kind)
    assert len(kinds) == 4, "each error has its own kind"


def test_unknown_schema_id(registry, ce_message):
    unknown = max(i for i, _ in ENTRIES) + 1000
    with pytest.raises(UnknownSchemaError) as info:
        registry.decode(frame(unknown, ce_message[5:]))
    error = info.value
    assert isinstance(error, CalibstreamError)
    assert error.schema_id == unknown and error.kind == "unknown_schema"
    assert f"schema id {unknown}" in str(error) and "registry.json" in str(error)


@pytest.mark.parametrize("magic", [1, 0x7B, 0xFF])
def test_wrong_magic_byte(registry, ce_message, magic):
    with pytest.raises(UndecodableError) as info:
        registry.decode(bytes([magic]) + ce_message[1:])
    assert isinstance(info.value, CalibstreamError)
    assert "magic byte" in str(info.value) and str(magic) in str(info.value)


@pytest.mark.parametrize("length", [0, 1, 4])
def test_too_short(registry, ce_message, length):
    with pytest.raises(UndecodableError) as info:
        registry.decode(ce_message[:length])
    assert isinstance(info.value, CalibstreamError)
    assert f"{length} bytes" in str(info.value) and "shorter" in str(info.value)


def test_not_bytes(registry, ce_message):
    with pytest.raises(UndecodableError, match="expected bytes, got str"):
        registry.decode(ce_message.decode("latin-1"))
    with pytest.raises(UndecodableError, match="expected bytes, got NoneType"):
        registry.decode(None)


@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_truncation_of_the_body_is_undecodable(registry, subject):
    schema_id, entry = CURRENT[subject]
    message = registry.encode(subject, example_record(schema_json(entry["file"]), rich=True))
    for end in range(5, len(message)):
        with pytest.raises(UndecodableError) as info:
            registry.decode(message[:end])
        assert info.value.schema_id == schema_id
        assert f"not a {subject} v{entry['version']} record" in str(info.value), end


@pytest.mark.parametrize("garbage", [b"\x00", b"\x02abc", b"\xff" * 100])
def test_trailing_garbage(registry, ce_message, garbage):
    with pytest.raises(UndecodableError) as info:
        registry.decode(ce_message + garbage)
    assert f"{len(garbage)} bytes left after the {CE} record" in str(info.value)
    assert info.value.schema_id == schema_id_of(ce_message)


def test_random_bytes(registry):
    rng = random.Random(20240601)
    for _ in range(200):  # not framed at all
        data = bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(4, 64))
        with pytest.raises(UndecodableError, match="magic byte"):
            registry.decode(data)
    for schema_id, _ in ENTRIES:  # framed with a real id, a random body
        for _ in range(200):
            data = frame(schema_id, rng.randbytes(rng.randrange(0, 64)))
            with pytest.raises(UndecodableError) as info:
                registry.decode(data)
            assert info.value.schema_id == schema_id


def test_unexpected_subject(registry):
    detection_id, entry = CURRENT["detection"]
    message = registry.encode("detection", example_record(schema_json(entry["file"])))
    with pytest.raises(UnexpectedSubjectError) as info:
        registry.decode(message, expected_subject=CE)
    error = info.value
    assert isinstance(error, CalibstreamError) and error.schema_id == detection_id
    assert "detection" in str(error) and f"expected {CE}" in str(error)
    assert registry.decode(message, expected_subject="detection").subject == "detection"


@pytest.mark.parametrize("subject", SUBJECTS)
def test_missing_required_field(registry, subject):
    schema = schema_json(CURRENT[subject][1]["file"])
    record = example_record(schema)
    missing = next(f["name"] for f in schema["fields"] if "default" not in f)
    del record[missing]
    with pytest.raises(EncodeError) as info:
        registry.encode(subject, record)
    error = info.value
    assert isinstance(error, CalibstreamError) and error.kind == "encode"
    assert missing in str(error) and CURRENT[subject][1]["file"] in str(error)


@pytest.mark.parametrize(
    "field,value",
    [
        ("band", None),
        ("band", b"r"),
        ("detector", "3"),
        ("attributes", {"night": 1}),
        ("airmass", "1.0"),
        ("exposure_id", 2**64),
        ("mjd_obs", "x"),
    ],
)
def test_wrong_type_is_an_encode_error(registry, field, value):
    with pytest.raises(EncodeError, match=field):
        registry.encode(CE, {**V1_RECORD, field: value})


def test_extra_field_and_unknown_subject_are_encode_errors(registry):
    with pytest.raises(EncodeError, match="seeing_arcsec"):
        registry.encode(CE, {**V1_RECORD, "seeing_arcsec": 1.0})
    with pytest.raises(EncodeError, match="no schema for subject 'nope'"):
        registry.encode("nope", V1_RECORD)
    with pytest.raises(UnknownSchemaError, match="schema id 424242"):
        registry.encode(424242, V1_RECORD)


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 3.7, True], ids=str)
def test_value_outside_an_avro_int_is_an_encode_error(registry, value):
    with pytest.raises(EncodeError, match="detector"):
        registry.encode(CE, {**V1_RECORD, "detector": value})


def test_body_with_an_out_of_range_int_is_undecodable(registry):
    # the v1 layout with detector widened to a long: a varint of 2**40 where an int belongs
    wide = schema_json(f"{CE}.v1.avsc")
    next(f for f in wide["fields"] if f["name"] == "detector")["type"] = "long"
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(wide, named_schemas={}), {**V1_RECORD, "detector": 2**40}
    )
    with pytest.raises(UndecodableError):
        registry.decode(frame(V1_ID, body.getvalue()))


# ------------------------------------------------------------------ 5. plain fastavro


@pytest.mark.parametrize("subject", SUBJECTS)
def test_plain_fastavro_reads_a_codec_message_from_the_schema_file_alone(subject):
    schema_id, entry = CURRENT[subject]
    record = example_record(schema_json(entry["file"]), rich=True)
    message = codec.encode(subject, record)

    # the reading side: the message, the schema file, fastavro, nothing of calibstream
    assert message[0] == 0 and int.from_bytes(message[1:5], "big") == schema_id
    parsed = fastavro.parse_schema(json.loads((SCHEMAS / entry["file"]).read_text()))
    body = io.BytesIO(message[5:])
    assert fastavro.schemaless_reader(body, parsed) == record
    assert body.tell() == len(message) - 5, "the body is exactly one record"


@pytest.mark.parametrize("subject", SUBJECTS)
def test_codec_reads_a_plain_fastavro_message(registry, subject):
    schema_id, entry = CURRENT[subject]
    record = example_record(schema_json(entry["file"]), rich=True)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema_json(entry["file"])), record)
    message = struct.pack(">BI", 0, schema_id) + body.getvalue()
    assert message == registry.encode(subject, record)
    assert registry.decode(message, expected_subject=subject).record == record


# ------------------------------------------------------------------ 6. the registered versions

#: (subject, an older version's id and entry) for every subject registered more than once
OLDER = [
    pytest.param(entry["subject"], schema_id, entry, id=f"{entry['subject']}-v{entry['version']}")
    for schema_id, entry in ENTRIES
    if entry["version"] < CURRENT[entry["subject"]][1]["version"]
]


def _fields(file: str) -> dict[str, dict]:
    return {field["name"]: field for field in schema_json(file)["fields"]}


@pytest.mark.parametrize(("subject", "old_id", "old"), OLDER)
def test_a_newer_version_only_adds_fields_with_defaults(subject, old_id, old):
    before, after = _fields(old["file"]), _fields(CURRENT[subject][1]["file"])
    assert set(before) <= set(after), f"{subject}: fields removed"
    assert all(after[name]["type"] == before[name]["type"] for name in before)
    assert all("default" in after[name] for name in set(after) - set(before))


@pytest.mark.parametrize(("subject", "old_id", "old"), OLDER)
def test_a_bare_fastavro_reader_of_an_older_version_reads_the_current_one(subject, old_id, old):
    current = CURRENT[subject][1]["file"]
    record = example_record(schema_json(current), rich=True)
    message = codec.encode(subject, record)
    # the reader: the message, the writer's .avsc (its id's) and its own older .avsc, fastavro
    writer = fastavro.parse_schema(schema_json(current))
    reader = fastavro.parse_schema(schema_json(old["file"]))
    body = io.BytesIO(message[5:])
    known = set(_fields(old["file"]))
    assert fastavro.schemaless_reader(body, writer, reader) == {
        name: value for name, value in record.items() if name in known
    }
    assert body.tell() == len(message) - 5


@pytest.mark.parametrize(("subject", "old_id", "old"), OLDER)
def test_older_versions_still_decode_with_the_new_fields_defaults(registry, subject, old_id, old):
    record = example_record(schema_json(old["file"]), rich=True)
    message = registry.encode(old_id, record)
    added = set(_fields(CURRENT[subject][1]["file"])) - set(_fields(old["file"]))
    defaults = {name: _fields(CURRENT[subject][1]["file"])[name]["default"] for name in added}
    assert registry.decode(message, expected_subject=subject) == (
        old_id,
        subject,
        old["version"],
        {**record, **defaults},
    )
