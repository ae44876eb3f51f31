"""The pure format rules: code table vs spec, manifest model and schema, path rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiled_archive.rules import codes
from tiled_archive.rules.manifest import FileEntry, Manifest, parse_manifest
from tiled_archive.rules.names import FORMAT_VERSION
from tiled_archive.rules.paths import check_path, path_problems
from tiled_archive.rules.problems import ArchiveError, clip
from tiled_archive.rules.schemas import manifest_schema

from ..fuzz.mutators import json_positions

SPEC = Path(__file__).resolve().parents[2] / "spec" / "FORMAT.md"


def spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def test_spec_code_table_is_the_code_data():
    assert codes.markdown_table() in spec_text()


def test_every_code_in_spec_prose_exists_and_every_rule_code_is_cited():
    text = spec_text()
    table_start = text.index("## 11. Codes")
    cited = set(re.findall(r"TA-[EW]\d{3}", text[:table_start]))
    assert cited <= set(codes.CODES), cited - set(codes.CODES)
    format_rules = {c for c in codes.CODES if not c.startswith("TA-E9")}
    assert format_rules <= cited, f"codes never cited by a rule: {format_rules - cited}"


def test_every_must_and_should_sentence_names_a_code():
    text = spec_text()[: spec_text().index("## 11. Codes")]
    # Bullet items and paragraphs are the rule units of the spec.
    units = re.split(r"\n(?=- |\n)", text)
    for unit in units:
        if re.search(r"\b(MUST|SHOULD)\b", unit) and "RFC 2119" not in unit:
            # Rules on software (writers, readers) bind programs, not archives: no code.
            on_software = re.search(r"\b([Ww]riters?|[Rr]eaders?) (SHOULD|MUST)\b", unit)
            assert re.search(r"TA-[EW]\d{3}", unit) or on_software, unit


def test_json_examples_in_spec_validate():
    import jsonschema

    blocks = re.findall(r"```json\n(.*?)```", spec_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        jsonschema.Draft202012Validator(manifest_schema()).validate(json.loads(block))
        Manifest.loads(block.encode())


def test_schema_is_a_valid_2020_12_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(manifest_schema())
    spec_copy = json.loads((SPEC.parent / "manifest.schema.json").read_text())
    assert spec_copy == manifest_schema()


def test_published_schemas_are_the_packaged_ones():
    """spec/'s schemas are written from the package's (conformance/spec_copies.py), byte for
    byte, and are real files (a symbolic link does not survive a ZIP of the repository)."""
    from conformance import spec_copies

    assert spec_copies.stale() == []


# -- Manifest model ----------------------------------------------------------------------------

segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\?#%"),
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)
archive_path = st.lists(segment, min_size=1, max_size=4).map(lambda s: "data/" + "/".join(s))
digest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
entries = st.builds(FileEntry, path=archive_path, size=st.integers(0, 2**50), sha256=digest)


@given(
    files=st.lists(entries, unique_by=lambda e: e.path, max_size=20),
    catalog_size=st.integers(0, 2**40),
    catalog_sha=digest,
    producer_version=st.text(max_size=10),
)
def test_manifest_round_trips(files, catalog_size, catalog_sha, producer_version):
    manifest = Manifest(
        catalog=FileEntry("catalog.db", catalog_size, catalog_sha),
        files=tuple(sorted(files, key=lambda f: f.path)),
        created="2026-11-24T09:00:00Z",
        tiled_schema_revision="917dbbcfc4b1",
        producer={"name": "x", "version": producer_version},
    )
    raw = manifest.dumps()
    assert Manifest.loads(raw) == manifest
    assert Manifest.loads(raw).dumps() == raw


def good_document() -> dict:
    return json.loads(
        Manifest(
            catalog=FileEntry("catalog.db", 1, "a" * 64),
            files=(FileEntry("data/x.h5", 2, "b" * 64),),
            created="2026-11-24T09:00:00Z",
            tiled_schema_revision="917dbbcfc4b1",
        ).dumps()
    )


def codes_of(raw: bytes) -> list[str]:
    problems, _ = parse_manifest(raw)
    return [p.code for p in problems]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("files"), "TA-E301"),
        (lambda d: d.update(format="other"), "TA-E301"),
        (lambda d: d.update(format_version="one"), "TA-E301"),
        (lambda d: d.update(format_version="2.0"), "TA-E302"),
        (lambda d: d.update(format_version="1.7"), "TA-W300"),
        (lambda d: d["files"][0].update(sha256="XYZ"), "TA-E301"),
        (lambda d: d["files"][0].update(size=-1), "TA-E301"),
        (lambda d: d["files"][0].update(path="catalog.db"), "TA-E303"),
        (lambda d: d["files"][0].update(path="data/../../etc/passwd"), "TA-E201"),
        (lambda d: d["files"][0].update(path="data/a#b"), "TA-E200"),
        (lambda d: d["files"].append(dict(d["files"][0])), "TA-E304"),
        (lambda d: d["catalog"].update(path="other.db"), "TA-E301"),
        (lambda d: d.update(created="yesterday"), "TA-E301"),
    ],
)
def test_bad_manifests_give_their_code(mutate, expected):
    document = good_document()
    mutate(document)
    found = codes_of(json.dumps(document).encode())
    assert expected in found, found


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
#: Values where JSON Schema implementations are known to part ways: 1.0 as an integer, bools
#: as numbers, "$" before a final newline, huge numbers, empty text.
tricky_values = st.sampled_from(
    [
        1.0,
        0.0,
        -0.0,
        1e300,
        True,
        False,
        2**64,
        -1,
        "",
        "917dbbcfc4b1\n",
        "a" * 64 + "\n",
        "1.1\n",
        "catalog.db",
        "catalog.db\n",
        "2026-11-24T09:00:00Z\n",
        "data/x",
        {},
        [],
    ]
)


@given(data=st.data())
def test_the_compiled_schema_check_gives_jsonschemas_verdict(data):
    """SchemaCheck answers "valid" without jsonschema when fastjsonschema's compiled schema
    passes a document: on manifests and specs mutated anywhere, its errors are exactly what
    jsonschema alone reports (so the compiled check is never laxer)."""
    import jsonschema

    from tiled_archive.rules.schemas import SchemaCheck, manifest_check, tiled_rules

    specs = tiled_rules()["specs"]
    check, schema, document = data.draw(
        st.sampled_from(
            [  # the manifest's check is the package's compiled module; the specs' compiled here
                (manifest_check(), manifest_schema(), good_document()),
                (SchemaCheck(specs), specs, [{"name": "xdi", "version": "1.0"}, {"name": "a"}]),
            ]
        )
    )
    holder = {"root": document}
    for _ in range(data.draw(st.integers(1, 3))):
        parent, key = data.draw(st.sampled_from(json_positions(holder["root"])))
        parent, key = (holder, "root") if parent is None else (parent, key)
        value = data.draw(tricky_values | json_values)
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace" or parent is holder:
            parent[key] = value
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=6))] = value
        else:
            parent.append(value)
    document = holder["root"]
    reference = jsonschema.Draft202012Validator(schema).iter_errors(document)
    expected = sorted(repr((list(e.absolute_path), e.message)) for e in reference)
    found = sorted(repr((list(e.absolute_path), e.message)) for e in check.errors(document))
    assert found == expected


def test_the_shipped_compiled_manifest_check_is_current_and_used():
    """tiled_archive/manifest_schema_check.py is what fastjsonschema compiles from the schema
    today, and the package uses it (not a compile of its own)."""
    from conformance import manifest_check as generator
    from tiled_archive.rules import manifest_schema_check
    from tiled_archive.rules.schemas import manifest_check

    assert generator.main(["--check"]) == 0
    assert manifest_check()._passes is manifest_schema_check.validate


def test_not_json_and_not_utf8():
    assert codes_of(b"{not json") == ["TA-E300"]
    assert codes_of(b"\xff\xfe{}") == ["TA-E300"]


def test_loads_raises_coded_error_naming_the_field():
    document = good_document()
    del document["catalog"]
    with pytest.raises(ArchiveError) as err:
        Manifest.loads(json.dumps(document).encode())
    assert err.value.code == "TA-E301"
    assert "catalog" in str(err.value)


def test_unknown_fields_survive_a_round_trip():
    document = good_document()
    document["future_field"] = {"x": 1}
    manifest = Manifest.loads(json.dumps(document).encode())
    assert json.loads(manifest.dumps())["future_field"] == {"x": 1}
    assert manifest.format_version == FORMAT_VERSION


# -- Paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("data/a\x00b", "TA-E200"),
        ("data/a\nb", "TA-E200"),
        ("data/a\\b", "TA-E200"),
        ("data/a?b", "TA-E200"),
        ("data/50%.h5", "TA-E200"),
        ("data/\udcff.h5", "TA-E200"),
        ("/data/a", "TA-E201"),
        ("C:/data/a", "TA-E201"),
        ("data//a", "TA-E201"),
        ("data/./a", "TA-E201"),
        ("data/../a", "TA-E201"),
        ("data/" + "x" * 256, "TA-E202"),
        ("data/e\u0301.h5", "TA-W200"),
    ],
)
def test_path_rules(path, code):
    assert code in [p.code for p in path_problems(path)]


@given(archive_path)
def test_generated_paths_are_valid(path):
    assert check_path(path) == path


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("scan\x1b]0;title\x07", "scan\\x1b]0;title\\x07"),  # a terminal's own commands
        ("a\nb\tc\x7f\x9b", "a\\nb\\tc\\x7f\\x9b"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # a right-to-left override
        ("Si (111) — ünïcode", "Si (111) — ünïcode"),
    ],
)
def test_text_from_an_archive_is_shown_without_controls(text, shown):
    assert clip(text) == shown
    assert len(clip("x" * 1000 + "\x1b")) == 299


# -- Canonical manifest and sorted BagIt lines (TA-W301, TA-W401) ------------------------------


def test_canonical_manifest_is_python_json_with_sorted_keys_and_files():
    from tiled_archive.rules.manifest import canonical_manifest, canonical_problem

    document = good_document()
    document["root"] = {"metadata": {"b": "é", "a": [1, {"z": None, "y": "\n"}]}, "specs": []}
    document["files"] = [
        {"size": 1, "sha256": "c" * 64, "path": "data/é.csv"},
        {"sha256": "b" * 64, "path": "data/z.h5", "size": 2},
        {"path": "data/Z.h5", "size": 3, "sha256": "d" * 64},
    ]
    canonical = canonical_manifest(document)
    assert canonical_problem(canonical) is None
    text = canonical.decode("utf-8")
    # files by code point of the path ('Z' < 'z' < 'é'), keys sorted at every level
    assert text.index("data/Z.h5") < text.index("data/z.h5") < text.index("data/é.csv")
    assert '"a": [\n        1,\n        {\n          "y": "\\n",\n          "z": null' in text
    assert '"b": "é"' in text and text.endswith("}\n") and "\\u" not in text
    for variant in (
        canonical.rstrip(b"\n"),  # no final newline
        json.dumps(document, indent=2, sort_keys=True).encode() + b"\n",  # \u escapes
        json.dumps(document, indent=4, sort_keys=True, ensure_ascii=False).encode() + b"\n",
        json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n",  # keys unsorted
    ):
        problem = canonical_problem(variant)
        assert problem is not None and problem.code == "TA-W301", variant[:80]


def test_bagit_lines_sorted_by_code_point_of_the_whole_path():
    from tiled_archive.rules.bag import digest_lines, order_problems

    paths = ["data/a/b", "data/a b", "data/a-b", "data/B", "data/é", "data/z"]
    text = digest_lines(dict.fromkeys(paths, "0" * 64))
    assert order_problems(text, "manifest-sha256.txt") == []
    listed = [line.split("  ", 1)[1] for line in text.decode().splitlines()]
    assert listed == sorted(paths, key=lambda p: p.encode("utf-8"))  # bytewise = code point
    lines = text.splitlines(keepends=True)
    swapped = b"".join([lines[1], lines[0], *lines[2:]])
    (problem,) = order_problems(swapped, "manifest-sha256.txt")
    assert problem.code == "TA-W401" and "line 2" in problem.message
