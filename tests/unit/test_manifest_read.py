"""Reading manifests in every format, and the pure column checks."""

import json
from pathlib import Path

import pytest

from pipeline.manifest import (
    InputRef,
    check_output_name,
    check_rows,
    derive_id,
    parse_input,
    read_manifest,
)
from pipeline.sync_modes import SyncMode

ROWS = [
    {
        "id": "ep1",
        "video": "v/ep1.mp4",
        "audio": "a/ep1-de.wav",
        "sync_mode": "loop",
        "language": "de",
    },
    {"video": "v/ep2.mp4", "audio": "a/ep2-de.wav", "language": "fr"},
]


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "m.csv",
            "id,video,audio,sync_mode,language\nep1,v/ep1.mp4,a/ep1-de.wav,loop,de\n,v/ep2.mp4,a/ep2-de.wav,,fr\n",
        ),
        ("m.json", json.dumps(ROWS)),
        ("m.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n"),
        (
            "m.yaml",
            "- id: ep1\n  video: v/ep1.mp4\n  audio: a/ep1-de.wav\n  sync_mode: loop\n  language: de\n"
            "- video: v/ep2.mp4\n  audio: a/ep2-de.wav\n  language: fr\n",
        ),
    ],
)
def test_every_format_reads_the_same_rows(tmp_path, name, text):
    rows, problems = read_manifest(write(tmp_path, name, text))
    assert problems == []
    checked, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    assert problems == []
    assert checked[0].id == "ep1"
    assert checked[0].sync_mode is SyncMode.LOOP
    assert checked[1].sync_mode is SyncMode.CUT_OFF  # the batch default
    assert checked[0].metadata == {"language": "de"}
    assert checked[1].metadata == {"language": "fr"}
    assert checked[0].video == InputRef("local", str(tmp_path / "v" / "ep1.mp4"))
    assert checked[1].output == f"{checked[1].id}.mp4"


def test_csv_with_bom_semicolons_and_non_ascii(tmp_path):
    text = "\ufeffvideo;audio;titre\nvidéos/épisode 1.mp4;audio/ép 1.wav;Épisode « un »\n"
    rows, problems = read_manifest(write(tmp_path, "m.csv", text))
    assert problems == []
    assert rows[0].values["video"] == "vidéos/épisode 1.mp4"
    assert rows[0].values["titre"] == "Épisode « un »"


def test_non_utf8_file_is_refused_with_its_line(tmp_path):
    path = write(tmp_path, "m.csv", "video,audio\nvidéo.mp4,a.wav\n", encoding="cp1252")
    rows, problems = read_manifest(path)
    assert rows == []
    assert "not UTF-8" in problems[0].message and problems[0].line == 2
    assert "UTF-8" in problems[0].hint


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("m.txt", "video,audio\n", "unknown manifest format"),
        ("m.csv", "", "empty"),
        ("m.csv", "video,audio\n", "no rows"),
        ("m.json", "{not json", "invalid JSON"),
        ("m.json", '{"video": "a"}', "list of objects"),
        ("m.yaml", "- [unclosed", "invalid YAML"),
        ("m.jsonl", '{"video": "a", "audio": "b"}\n[1, 2]\n', "not a JSON object"),
    ],
)
def test_broken_files_say_what_is_wrong(tmp_path, name, text, expected):
    _, problems = read_manifest(write(tmp_path, name, text))
    assert problems and expected in problems[0].message


def test_missing_columns_are_reported_once_for_the_file(tmp_path):
    _, problems = read_manifest(write(tmp_path, "m.csv", "id,video\nep1,v.mp4\n"))
    assert [(p.field, p.message) for p in problems] == [("audio", "missing column 'audio'")]


def test_extra_cells_are_reported_with_the_line(tmp_path):
    _, problems = read_manifest(write(tmp_path, "m.csv", "video,audio\na.mp4,b.wav,surprise\n"))
    assert problems[0].row == 1 and problems[0].line == 2


def test_column_checks_report_every_problem_with_row_and_field(tmp_path):
    rows, _ = read_manifest(
        write(
            tmp_path,
            "m.json",
            json.dumps(
                [
                    {"id": "a", "video": "v.mp4", "audio": "a.wav", "sync_mode": "bouce"},
                    {"id": "a", "video": "", "audio": "ftp://host/a.wav"},
                    {
                        "id": "bad id!",
                        "video": "v.mp4",
                        "audio": "a.wav",
                        "output": "../../etc/x.mp4",
                    },
                ]
            ),
        )
    )
    _, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    found = {(p.row, p.field) for p in problems}
    assert found == {
        (1, "sync_mode"),
        (2, "video"),
        (2, "audio"),
        (2, "id"),
        (3, "id"),
        (3, "output"),
    }
    sync_problem = next(p for p in problems if p.field == "sync_mode")
    assert "bounce, cut_off, loop, remap, silence" in sync_problem.hint
    assert "row 1, field 'sync_mode'" in str(sync_problem)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("s3://bucket/key/a.mp4", "s3"),
        ("https://cdn.example.com/a.mp4", "https"),
        ("clips/a b.mp4", "local"),
    ],
)
def test_input_kinds(tmp_path, value, kind):
    ref = parse_input(value, base_dir=tmp_path)
    assert isinstance(ref, InputRef) and ref.kind == kind


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("file:///etc/passwd", "unsupported URL scheme file://"),
        ("ftp://host/a.mp4", "unsupported URL scheme ftp://"),
        ("http://host/a.mp4", "LIPDUB_MEDIA__ALLOW_HTTP_URLS=true"),
        ("s3://bucket-only", "not a complete s3://"),
        ("cdn.example.com/a.mp4", "without a scheme"),
        ("//cdn.example.com/a.mp4", "no scheme"),
    ],
)
def test_unsupported_locations_say_why(tmp_path, value, expected):
    reason = parse_input(value, base_dir=tmp_path)
    assert isinstance(reason, str) and expected in reason


def test_http_can_be_allowed_for_local_servers(tmp_path):
    assert (
        parse_input("http://127.0.0.1:9/a.mp4", base_dir=tmp_path, allow_http=True).kind == "http"
    )


@pytest.mark.parametrize(
    "name", ["../x.mp4", "a/../../x.mp4", "/abs.mp4", "C:/x.mp4", "a\\b.mp4", "x.mov", "a\x00.mp4"]
)
def test_output_names_that_escape_or_lie_are_refused(name):
    assert check_output_name(name) is not None


@pytest.mark.parametrize("name", ["ep1.mp4", "de/season 1/ep1.mp4", "épisode", "a..b.mp4"])
def test_plain_output_names_are_fine(name):
    assert check_output_name(name) is None


def test_derived_ids_are_stable_and_distinct_per_mode():
    video, audio = InputRef("local", "/m/ep1.mp4"), InputRef("local", "/m/ep1-de.wav")
    assert derive_id(video, audio, SyncMode.LOOP) == derive_id(video, audio, SyncMode.LOOP)
    assert derive_id(video, audio, SyncMode.LOOP) != derive_id(video, audio, SyncMode.BOUNCE)


def test_a_repeated_row_without_ids_is_a_duplicate(tmp_path):
    rows, _ = read_manifest(write(tmp_path, "m.csv", "video,audio\nv.mp4,a.wav\nv.mp4,a.wav\n"))
    _, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    assert [(p.row, p.field) for p in problems] == [(2, "id")]
    assert "repeats row 1" in problems[0].message


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("video,audio\na;b.mp4,c.wav\n", ","),
        ("video;audio\na,b.mp4;c.wav\n", ";"),
        ("video\taudio\n", "\t"),
        ("video\n", ","),
    ],
)
def test_the_delimiter_is_decided_by_the_header(text, delimiter):
    from pipeline.manifest import header_delimiter

    assert header_delimiter(text) == delimiter


def test_a_path_with_a_semicolon_keeps_the_comma_delimiter(tmp_path):
    rows, problems = read_manifest(write(tmp_path, "m.csv", "video,audio\nclips/a;b.mp4,c.wav\n"))
    assert problems == [] and rows[0].values == {"video": "clips/a;b.mp4", "audio": "c.wav"}


def test_two_rows_writing_the_same_output_are_refused(tmp_path):
    text = "id,video,audio,output\na,v1.mp4,a1.wav,de/ep1.mp4\nb,v2.mp4,a2.wav,DE/EP1.mp4\nde,v3.mp4,a3.wav,\n"
    rows, _ = read_manifest(write(tmp_path, "m.csv", text))
    _, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    assert [(p.row, p.field) for p in problems] == [(2, "output")]
    assert "row 1's output" in problems[0].message


@pytest.mark.parametrize(
    ("header", "meant"),
    [
        ("ouput", "output"),
        ("sync-mode", "sync_mode"),
        ("sync mode", "sync_mode"),
        ("vidoe", "video"),
    ],
)
def test_a_column_name_close_to_a_known_one_is_an_error_with_the_fix(tmp_path, header, meant):
    # Given a manifest whose header misspells one of lipdub's columns
    columns = {"video": "ep1.mp4", "audio": "ep1.wav", header: "x"}
    if meant == "video":
        columns["video_file"] = columns.pop("video")
    (tmp_path / "m.csv").write_text(
        ",".join(columns) + "\n" + ",".join(columns.values()) + "\n", encoding="utf-8"
    )
    rows, _ = read_manifest(tmp_path / "m.csv")
    _, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    # Then it is refused, naming the column and what it was probably meant to be
    named = [p for p in problems if p.field == header]
    assert len(named) == 1 and f"did you mean {meant!r}" in named[0].message


def test_other_extra_columns_stay_metadata(tmp_path):
    (tmp_path / "m.csv").write_text(
        "video,audio,output,language,notes\nep1.mp4,ep1.wav,x.mp4,de,fine\n", encoding="utf-8"
    )
    rows, _ = read_manifest(tmp_path / "m.csv")
    good, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    assert problems == [] and good[0].metadata == {"language": "de", "notes": "fine"}


def test_ids_may_hold_letters_of_any_script_and_derived_ids_keep_them(tmp_path):
    (tmp_path / "m.csv").write_text(
        "id,video,audio\nä-1,a.mp4,a.wav\nエピソード.3,b.mp4,b.wav\n,Überfall-07.mp4,ü.wav\n",
        encoding="utf-8",
    )
    rows, _ = read_manifest(tmp_path / "m.csv")
    good, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    assert problems == []
    assert [r.id for r in good][:2] == ["ä-1", "エピソード.3"]
    assert good[2].id.startswith("Überfall-07-ü-") and good[2].output == f"{good[2].id}.mp4"


@pytest.mark.parametrize("bad", ["a/b", "a:b", "-lead", "sp ace", "_x"])
def test_ids_still_refuse_what_storage_keys_cannot_hold(tmp_path, bad):
    (tmp_path / "m.csv").write_text(f"id,video,audio\n{bad},a.mp4,a.wav\n", encoding="utf-8")
    rows, _ = read_manifest(tmp_path / "m.csv")
    _, problems = check_rows(rows, base_dir=tmp_path, default_sync_mode=SyncMode.CUT_OFF)
    assert [p.field for p in problems] == ["id"]
