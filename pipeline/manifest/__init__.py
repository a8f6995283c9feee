"""Manifests: a list of (video, translated audio) pairs with optional id, sync_mode, output
and any metadata columns.

Columns: `video` and `audio` (required: a path relative to the manifest, `s3://bucket/key`,
or an `https://` URL), `id` (optional, derived from the inputs when absent), `sync_mode`
(optional; the batch default otherwise), `output` (optional output name). Any other column
is kept as metadata and carried to the report.

`read_manifest` (pipeline.manifest.read) turns a file into raw rows; `check_rows`
(pipeline.manifest.rows) checks their columns. Both are pure and report every problem at
once; the media itself is checked by `pipeline.planning`.
"""

from pipeline.manifest.read import (
    FORMATS,
    REQUIRED_COLUMNS,
    RawRow,
    header_delimiter,
    read_manifest,
)
from pipeline.manifest.rows import (
    AUDIO_FORMATS,
    KNOWN_COLUMNS,
    VIDEO_FORMATS,
    InputRef,
    ManifestRow,
    check_output_name,
    check_rows,
    derive_id,
    parse_input,
)

__all__ = [
    "AUDIO_FORMATS",
    "FORMATS",
    "KNOWN_COLUMNS",
    "REQUIRED_COLUMNS",
    "VIDEO_FORMATS",
    "InputRef",
    "ManifestRow",
    "RawRow",
    "check_output_name",
    "check_rows",
    "derive_id",
    "header_delimiter",
    "parse_input",
    "read_manifest",
]
