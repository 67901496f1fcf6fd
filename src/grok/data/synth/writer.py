"""Write a SynthEye dataset: biomarker table, one OCT B-scan and one CFP per eye (optionally an OCT volume), manifest
and contact sheet."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image
from tqdm.auto import tqdm

from grok.data.synth.cfp_render import render_cfp
from grok.data.synth.contact_sheet import write_contact_sheet
from grok.data.synth.oct_render import OctScale, render_oct, render_oct_volume
from grok.data.synth.oct_volume import VOLUME_COLUMN, VOLUME_DIR, VolumeOptions, slice_name, write_volume
from grok.data.synth.sampling import EYES, assign_labels, load_profiles, sample_subject
from grok.schema import load_schema

log = logging.getLogger(__name__)

FORMAT_NAME = "syntheye"
FORMAT_VERSION = 1
TABLE_NAME = "biomarkers.parquet"
MANIFEST_NAME = "manifest.json"
CONTACT_SHEET_NAME = "contact_sheet.png"
IMAGE_DIRS = ("oct", "cfp")
# Spawn keys of the per-subject streams for missingness, rendering and the off-centre slices of OCT volumes
# (sampling uses sampling.SUBJECT_STREAM).
MISSING_STREAM, RENDER_STREAM, VOLUME_STREAM = 2, 3, 4


@dataclass(frozen=True)
class SynthOptions:
    """Everything that shapes a SynthEye dataset besides its size and seed (mirrors `conf/synth.yaml: options`)."""

    oct_height: int = 224
    oct_width: int = 224
    oct_axial_um_per_px: float = 4.0
    oct_scan_width_mm: float = 6.0
    cfp_size: int = 224
    cfp_field_of_view_mm: float = 12.0
    class_weights: dict[str, float] | None = None  # label -> relative weight; None gives every label the same
    multilabel_fraction: float = 0.0
    missing_fraction: float = 0.02
    png_compress_level: int = 1
    contact_sheet_per_label: int = 2
    profiles: str | None = None  # path to a sampling-profile YAML; None uses the package's profiles.yaml
    appearance: str | None = None  # path to an appearance YAML; None uses the package's appearance.yaml
    chunk_size: int = 25  # subjects per worker task
    oct_volume: dict[str, Any] | None = None  # fields of `VolumeOptions`; None or enabled: false writes no volumes
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.extra:
            raise TypeError(f"unknown SynthEye option(s) {sorted(self.extra)}; expected {sorted(_option_names())}")
        for name in ("oct_height", "oct_width", "cfp_size"):
            if int(getattr(self, name)) < 32:
                raise ValueError(f"SynthEye option {name}={getattr(self, name)}: expected at least 32 pixels")
        if not 0.0 <= self.missing_fraction < 1.0:
            raise ValueError(f"SynthEye option missing_fraction={self.missing_fraction}: expected a value in [0, 1)")
        VolumeOptions.from_config(self.oct_volume)  # a bad block fails here, naming the key at fault

    @property
    def volume(self) -> VolumeOptions:
        """The parsed `oct_volume` block."""
        return VolumeOptions.from_config(self.oct_volume)


def _option_names() -> set[str]:
    return {name for name in SynthOptions.__dataclass_fields__ if name != "extra"}


@lru_cache(maxsize=4)
def load_appearance(path: str | None = None) -> dict[str, Any]:
    """The renderers' looks: the package's `appearance.yaml`, or a user file given by path."""
    source = Path(path) if path else Path(str(resources.files("grok.data.synth").joinpath("appearance.yaml")))
    with open(source, encoding="utf-8") as handle:
        appearance = yaml.safe_load(handle)
    for key in ("oct", "cfp"):
        if key not in appearance:
            raise ValueError(f"{source}: missing top-level key '{key}'")
    appearance["_source"] = str(source)
    return appearance


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _save_png(array: np.ndarray, path: Path, compress_level: int) -> None:
    """Write a PNG with fixed settings (no metadata, fixed compression) through a temporary name."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG", compress_level=compress_level)
    os.replace(tmp, path)


def _generate_chunk(
    out: str, seed: int, indices: Sequence[int], label_sets: Sequence[Sequence[str]], options: SynthOptions
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample, render and save a run of subjects; returns their table rows (one per eye, complete values) and the
    seconds spent (`eyes`: everything per eye; `volumes`: rendering and writing the OCT volumes)."""
    schema = load_schema()
    profiles = load_profiles(options.profiles)
    looks = load_appearance(options.appearance)
    volume = options.volume
    scale = OctScale(
        options.oct_height, options.oct_width, options.oct_axial_um_per_px, options.oct_scan_width_mm,
        profiles["layers"]["pit_sigma_mm"], profiles["layers"], looks["oct"],
    )  # fmt: skip
    nullable = [b.name for b in schema.by_modality("oct", "cfp") if b.nullable]
    rows, seconds = [], {"eyes": 0.0, "volumes": 0.0}
    for index, labels in zip(indices, label_sets, strict=True):
        started = time.perf_counter()
        subject = sample_subject(index, labels, seed, profiles, schema)
        missing_rng = _stream(seed, MISSING_STREAM, index)
        for eye_index, eye in enumerate(EYES):
            anatomy = subject.eyes[eye]
            render_rng = _stream(seed, RENDER_STREAM, index, eye_index)
            eye_id = f"{subject.subject_id}_{eye}"
            row = {"subject_id": subject.subject_id, "eye": eye, "visit": 0, "labels": ";".join(subject.labels)}
            row.update({"oct_path": f"oct/{eye_id}.png", "cfp_path": f"cfp/{eye_id}.png"})
            if volume.enabled:
                volume_started = time.perf_counter()
                stack = render_oct_volume(
                    anatomy, render_rng, _stream(seed, VOLUME_STREAM, index, eye_index), scale,
                    volume.positions_mm(), volume.quadrant_blend_deg,
                )  # fmt: skip
                oct_image = stack[volume.num_slices // 2]
                row[VOLUME_COLUMN] = write_volume(stack, Path(out), eye_id, volume, options.png_compress_level)
                seconds["volumes"] += time.perf_counter() - volume_started
            else:
                oct_image = render_oct(
                    anatomy, render_rng, height=scale.height, width=scale.width,
                    axial_um_per_px=scale.axial_um_per_px, scan_width_mm=scale.scan_width_mm,
                    pit_sigma_mm=scale.pit_sigma_mm, structure=scale.structure, look=scale.look,
                )  # fmt: skip
            cfp_image = render_cfp(
                anatomy, render_rng, size=options.cfp_size, field_of_view_mm=options.cfp_field_of_view_mm,
                look=looks["cfp"],
            )  # fmt: skip
            _save_png(oct_image, Path(out) / row["oct_path"], options.png_compress_level)
            _save_png(cfp_image, Path(out) / row["cfp_path"], options.png_compress_level)
            values = dict(anatomy.biomarkers)
            for name, gone in zip(nullable, missing_rng.random(len(nullable)) < options.missing_fraction, strict=True):
                if gone:
                    values[name] = math.nan
            row.update({name: values[name] for name in schema.biomarkers})
            rows.append(row)
        seconds["eyes"] += time.perf_counter() - started
    return rows, seconds


def _parameters(n_subjects: int, seed: int, options: SynthOptions) -> dict[str, Any]:
    params = {"n_subjects": n_subjects, "seed": seed, **asdict(options)}
    params.pop("extra")
    params.pop("chunk_size")  # does not change the bytes written
    params.pop("oct_volume")
    if options.volume.enabled:  # recorded only when on, so a dataset without volumes keeps its manifest
        params["oct_volume"] = options.volume.as_parameters()
    params["profiles_sha256"] = _file_digest(load_profiles(options.profiles)["_source"])
    params["appearance_sha256"] = _file_digest(load_appearance(options.appearance)["_source"])
    return params


def _prepare_output(out: Path, parameters: Mapping[str, Any], overwrite: bool, volumes: bool) -> None:
    """Refuse to replace a different dataset unless `overwrite`; clear what a previous SynthEye run wrote."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"SynthEye output_dir {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        manifest = out / MANIFEST_NAME
        previous = json.loads(manifest.read_text(encoding="utf-8")) if manifest.exists() else None
        same = previous is not None and previous.get("parameters") == json.loads(json.dumps(dict(parameters)))
        if not (same or overwrite):
            what = "a different SynthEye dataset" if previous else "files that are not a SynthEye dataset"
            raise FileExistsError(
                f"SynthEye output_dir {out} is not empty and holds {what}; choose another output_dir or pass "
                "overwrite=true (grok-synth overwrite=true) to replace it"
            )
    # The manifest and table go first, so an interrupted rerun never leaves a complete-looking dataset behind.
    for name in (MANIFEST_NAME, TABLE_NAME, CONTACT_SHEET_NAME):
        (out / name).unlink(missing_ok=True)
    for name in (*IMAGE_DIRS, VOLUME_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
        if name in IMAGE_DIRS or volumes:
            (out / name).mkdir(parents=True)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = load_schema()
    frame = pd.DataFrame(rows)
    for name, biomarker in schema.biomarkers.items():
        if biomarker.dtype == "float":
            frame[name] = frame[name].astype("float64")
        elif biomarker.dtype == "int":
            frame[name] = frame[name].astype("Int64" if frame[name].isna().any() else "int64")
    frame["visit"] = frame["visit"].astype("int64")
    return pa.Table.from_pandas(frame, preserve_index=False)


def _write_table_atomically(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def write_syntheye(
    output_dir: str | os.PathLike[str],
    n_subjects: int = 300,
    seed: int = 0,
    *,
    overwrite: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    **options: Any,
) -> Path:
    """Write a SynthEye dataset of `n_subjects` (both eyes) to `output_dir`; returns the path of the table.

    Same (n_subjects, seed, options) => byte-identical table and images, whatever `num_workers`. `options` are the
    fields of `SynthOptions` (image sizes and scales, class weights, multi-label and missing-value fractions, OCT
    volumes, ...). A `timings` dict is filled with the seconds spent, summed over workers: `eyes` (sampling, rendering
    and writing everything) and `volumes` (rendering and writing the OCT volumes), plus the `eye_count`.
    """
    known = _option_names()
    opts = SynthOptions(
        **{k: v for k, v in options.items() if k in known}, extra={k: v for k, v in options.items() if k not in known}
    )
    if n_subjects < 1:
        raise ValueError(f"n_subjects={n_subjects}: expected at least 1")
    out = Path(output_dir)
    schema = load_schema()
    profiles = load_profiles(opts.profiles)
    weights = dict(opts.class_weights) if opts.class_weights else {name: 1.0 for name in schema.label_names}
    unknown = sorted(set(weights) - set(schema.label_names))
    if unknown:
        raise ValueError(f"class_weights names {unknown} that are not schema labels {schema.label_names}")
    parameters = _parameters(n_subjects, seed, opts)
    _prepare_output(out, parameters, overwrite, opts.volume.enabled)
    label_sets = assign_labels(n_subjects, seed, weights, opts.multilabel_fraction, profiles["multilabel_combinations"])

    chunks = [
        list(range(start, min(start + opts.chunk_size, n_subjects))) for start in range(0, n_subjects, opts.chunk_size)
    ]
    bar = tqdm(total=n_subjects, desc="SynthEye subjects", unit="subject", disable=not progress)
    results: list[tuple[list[dict[str, Any]], dict[str, float]]] = []
    if num_workers > 0:
        # forkserver: workers never inherit the caller's threads (e.g. torch's), which fork alone could deadlock on.
        context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            futures = [
                pool.submit(_generate_chunk, str(out), seed, chunk, [label_sets[i] for i in chunk], opts)
                for chunk in chunks
            ]
            for future, chunk in zip(futures, chunks, strict=True):
                results.append(future.result())
                bar.update(len(chunk))
    else:
        for chunk in chunks:
            results.append(_generate_chunk(str(out), seed, chunk, [label_sets[i] for i in chunk], opts))
            bar.update(len(chunk))
    bar.close()
    rows = [row for chunk_rows, _ in results for row in chunk_rows]
    if timings is not None:
        timings.update({key: sum(seconds[key] for _, seconds in results) for key in ("eyes", "volumes")})
        timings["eye_count"] = float(len(rows))
    table_path = out / TABLE_NAME
    _write_table_atomically(_table(rows), table_path)
    frame = pd.read_parquet(table_path)
    volume = opts.volume
    write_contact_sheet(
        frame, out, out / CONTACT_SHEET_NAME, per_label=opts.contact_sheet_per_label, label_order=schema.label_names,
        volume_column=VOLUME_COLUMN if volume.enabled else None, volume_slices=volume.contact_sheet_slices,
        slice_positions_mm=volume.positions_mm(),
    )  # fmt: skip
    _write_manifest(out, parameters, frame, opts)
    return table_path


def label_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Subjects per label (a multi-label subject counts once for each of its labels)."""
    subjects = frame.drop_duplicates("subject_id")["labels"].str.split(";").explode()
    return {name: int(count) for name, count in subjects.value_counts().sort_index().items()}


def _write_manifest(out: Path, parameters: Mapping[str, Any], frame: pd.DataFrame, opts: SynthOptions) -> None:
    lateral = opts.oct_scan_width_mm * 1000.0 / opts.oct_width
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "schema_version": load_schema().version,
        "table": TABLE_NAME,
        "rows": len(frame),
        "subjects": int(frame["subject_id"].nunique()),
        "label_counts": label_counts(frame),
        "oct": {
            "folder": "oct",
            "height_px": opts.oct_height,
            "width_px": opts.oct_width,
            "axial_um_per_px": opts.oct_axial_um_per_px,
            "lateral_um_per_px": lateral,
            "scan_width_mm": opts.oct_scan_width_mm,
            "orientation": "horizontal B-scan through the fovea, vitreous at the top; nasal on the image's right for "
            "right eyes and on the left for left eyes",
            "thickness_definition": "macular thickness = ILM to Bruch's membrane (includes the RPE); ETDRS ring "
            "values are the thickness at the ring's mid-eccentricity (1.0 and 2.25 mm), the central subfield the "
            "area mean over r < 0.5 mm",
        },
        "cfp": {
            "folder": "cfp",
            "size_px": opts.cfp_size,
            "field_of_view_mm": opts.cfp_field_of_view_mm,
            "um_per_px": opts.cfp_field_of_view_mm * 1000.0 / opts.cfp_size,
            "orientation": "macula-centred; optic disc nasal (image right for right eyes)",
        },
        "contact_sheet": CONTACT_SHEET_NAME,
        "parameters": dict(parameters),
    }
    volume = opts.volume
    if volume.enabled:
        positions = volume.positions_mm()
        manifest["oct_volume"] = {
            "folder": VOLUME_DIR,
            "table_column": VOLUME_COLUMN,
            "formats": {
                "folder": f"{VOLUME_DIR}/<subject>_<eye>/{slice_name(0, volume.num_slices)} ... (one PNG per slice)",
                "tiff": f"{VOLUME_DIR}/<subject>_<eye>.tif (one page per slice, zlib)",
            },
            "table_format": volume.formats[0],
            "num_slices": volume.num_slices,
            "central_slice": volume.num_slices // 2,
            "slice_pitch_mm": volume.cube_height_mm / volume.num_slices,
            "slice_positions_mm": [round(float(y), 6) for y in positions],
            "orientation": "parallel horizontal B-scans; slice 0 is the most superior, the last the most inferior; "
            "the central slice passes through the fovea and is the same image as oct/<subject>_<eye>.png",
            "thickness_definition": "every slice samples one ILM-Bruch thickness map along its line: radial foveal "
            "profiles plus the RNFL's ETDRS quadrant offsets (flat within each quadrant, raised-cosine hand-over of "
            f"{volume.quadrant_blend_deg} degrees across the diagonals), so each subfield's table value is the "
            "thickness at its ring's mid-eccentricity inside its quadrant",
        }
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)
