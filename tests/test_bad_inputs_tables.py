"""Bad tables, images and config values through the real console entry points, as a user or an attacker makes them.

Each case writes its bad file under the test's folder (derived from the SynthEye fixture), runs the entry point
in-process and checks the documented outcome: `grok-validate` exits 1 on a table with problems (the report on
stdout, one line on stderr naming the first); a file that cannot be read, or a mistyped config value, ends any
command with exit status 2 and one line on stderr naming the file, row, column or value. Never a traceback.
"""

from __future__ import annotations

import logging
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROWS = 8  # four subjects, both eyes: enough for every check, quick to decode
TABLE_PROBLEMS, BAD_INPUT = 1, 2


@dataclass
class Outcome:
    """What a console command did: its exit status and what it printed."""

    code: int
    out: str
    err: str

    def error_line(self, program: str) -> str:
        """The one `<program>: error: ...` line on stderr (asserting there is exactly one and no traceback)."""
        lines = [line for line in self.err.splitlines() if line.startswith(f"{program}: error: ")]
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err, self.err
        return lines[0]


@pytest.fixture(scope="session")
def base_frame(syntheye_dir: Path) -> pd.DataFrame:
    """The first rows of the SynthEye table (a valid table)."""
    return pd.read_parquet(syntheye_dir / "biomarkers.parquet").head(ROWS).reset_index(drop=True)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syntheye_dir: Path) -> Path:
    """A folder to run from, holding (links to) the SynthEye images, so tables written here find them."""
    for name in ("HYDRA_FULL_ERROR", "GROK_DEBUG", "GROK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    for folder in ("oct", "cfp"):
        (tmp_path / folder).symlink_to(syntheye_dir / folder, target_is_directory=True)
    (tmp_path / "broken").mkdir()
    return tmp_path


@pytest.fixture
def run_cli(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable:
    """Run a console entry point in-process: run_cli("grok-validate", "table=...") -> Outcome."""

    def _run(program: str, *overrides: str) -> Outcome:
        main = _entry_point(program)
        monkeypatch.setattr(sys, "argv", [program, f"paths.root_dir={workdir}", *overrides])
        capsys.readouterr()
        _rebind_log_streams()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return _run


def _rebind_log_streams() -> None:
    """Point log handlers that an earlier test bound to its (now closed) captured stderr at this test's stderr.

    Libraries such as Lightning add a stream handler once, at import; in a real run there is only one stderr.
    """
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed stream


def _entry_point(program: str) -> Callable[[], object]:
    if program == "grok-validate":
        from grok.cli.validate import main
    elif program == "grok-generate":
        from grok.cli.generate import main
    elif program == "grok-train-align":
        from grok.cli.train_align import main
    else:
        raise AssertionError(program)
    return main


# ----------------------------------------------------------------------------------------------- bad files


def _png(path: Path, array: np.ndarray) -> bytes:
    Image.fromarray(array).save(path)
    return path.read_bytes()


def _bomb_png(path: Path) -> None:
    """A tiny PNG whose header claims 100000 x 100000 pixels (PIL refuses it as a decompression bomb)."""
    data = bytearray(_png(path, np.zeros((1, 1), np.uint8)))
    header = struct.pack(">II", 100_000, 100_000) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path.write_bytes(bytes(data))


def _write_image(path: Path, kind: str, syntheye_dir: Path) -> None:
    """A bad image file of `kind` at `path`."""
    real = (syntheye_dir / "cfp" / "S000000_R.png").read_bytes()
    if kind == "truncated_png":
        path.write_bytes(real[: len(real) // 3])
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "text_as_png":
        path.write_text("<html><body>404 Not Found</body></html>\n")
    elif kind == "bomb":
        _bomb_png(path)
    elif kind == "truncated_jpeg":
        Image.open(syntheye_dir / "cfp" / "S000000_R.png").convert("RGB").save(path.with_suffix(".tmp.jpg"))
        path.write_bytes(path.with_suffix(".tmp.jpg").read_bytes()[:600])
    elif kind == "tiff_header_only":
        path.write_bytes(b"II*\x00\x08\x00\x00\x00" + b"\xff" * 16)
    else:
        raise AssertionError(kind)


def _write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix.lower() == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    return path


# ------------------------------------------------------------------- values the schema must refuse (exit 1)


def _set(column: str, value: object, row: int = 3, dtype: str | None = None) -> Callable[[pd.DataFrame], None]:
    def corrupt(frame: pd.DataFrame) -> None:
        if dtype is not None:
            frame[column] = frame[column].astype(dtype)
        frame.loc[row, column] = value

    return corrupt


def _hba1c_in_percent(frame: pd.DataFrame) -> None:
    frame["hba1c_mmol_mol"] = np.linspace(5.2, 7.4, len(frame))


VALUE_CASES = {
    # name: (file name, corruption, text that must name the culprit in the stderr line)
    "negative_thickness": ("t.parquet", _set("macula_central_um", -5.0), ["row 4", "macula_central_um", "-5"]),
    "implausible_thickness": ("t.csv", _set("macula_central_um", 2000.0), ["row 5", "macula_central_um", "2000"]),
    "missing_age": ("t.parquet", _set("age_years", np.nan), ["row 4", "age_years", "missing"]),
    "missing_subject_id": ("t.parquet", _set("subject_id", None, dtype="object"), ["row 4", "subject_id"]),
    "nan_text_subject_id": ("t.parquet", _set("subject_id", "nan"), ["row 4", "subject_id", "'nan'"]),
    "none_text_subject_id": ("t.parquet", _set("subject_id", "None"), ["row 4", "subject_id", "'None'"]),
    "blank_subject_id": ("t.parquet", _set("subject_id", "  "), ["row 4", "subject_id", "missing"]),
    "hba1c_in_percent": ("t.parquet", _hba1c_in_percent, ["hba1c_mmol_mol", "'%'", "mmol/mol"]),
    "one_hba1c_in_percent": ("t.parquet", _set("hba1c_mmol_mol", 6.1), ["row 4", "hba1c_mmol_mol", "6.1"]),
    "inf_parquet": ("t.parquet", _set("rnfl_avg_um", np.inf), ["row 4", "rnfl_avg_um", "inf", "not finite"]),
    "minus_inf_parquet": ("t.parquet", _set("rnfl_avg_um", -np.inf), ["row 4", "rnfl_avg_um", "-inf"]),
    "inf_text_csv": ("t.csv", _set("rnfl_avg_um", "inf", dtype="object"), ["row 5", "rnfl_avg_um", "not finite"]),
    "infinity_text_csv": ("t.csv", _set("rnfl_avg_um", "-Infinity", dtype="object"), ["row 5", "-inf"]),
    "inf_text_tsv": ("t.tsv", _set("gcipl_avg_um", "inf", dtype="object"), ["row 5", "gcipl_avg_um", "inf"]),
    "fractional_visit": ("t.parquet", _set("visit", 1.5, dtype="float"), ["row 4", "visit", "1.5", "integer"]),
    "infinite_visit_csv": ("t.csv", _set("visit", "inf", dtype="object"), ["row 5", "visit", "value inf is not"]),
    "fractional_count": ("t.parquet", _set("drusen_count", 2.5, dtype="float"), ["row 4", "drusen_count", "2.5"]),
    "no_rows_parquet": ("t.parquet", lambda frame: frame.drop(frame.index, inplace=True), ["no rows"]),
    "no_rows_csv": ("t.csv", lambda frame: frame.drop(frame.index, inplace=True), ["no rows"]),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_grok_validate_reports_a_bad_value(case: str, base_frame: pd.DataFrame, workdir: Path, run_cli) -> None:
    name, corrupt, culprit = VALUE_CASES[case]
    frame = base_frame.copy()
    corrupt(frame)
    table = _write_table(frame, workdir / name)
    outcome = run_cli("grok-validate", f"table={table}", "check_images=false")
    assert outcome.code == TABLE_PROBLEMS, outcome
    line = outcome.error_line("grok-validate")
    assert str(table) in line and all(part in line for part in culprit), line
    assert str(table) in outcome.out  # the full report


# --------------------------------------------------------------------- images that cannot be decoded (exit 1)

IMAGE_CASES = {
    "truncated_png": ("oct_path", "scan.png"),
    "zero_bytes": ("cfp_path", "photo.png"),
    "text_as_png": ("cfp_path", "photo.png"),
    "bomb": ("oct_path", "scan.png"),
    "truncated_jpeg": ("cfp_path", "photo.jpg"),
    "tiff_header_only": ("oct_path", "scan.tif"),
}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # PIL's own note on the broken TIFF header
@pytest.mark.parametrize("kind", list(IMAGE_CASES))
def test_grok_validate_decodes_every_image(
    kind: str, base_frame: pd.DataFrame, workdir: Path, syntheye_dir: Path, run_cli
) -> None:
    column, name = IMAGE_CASES[kind]
    _write_image(workdir / "broken" / name, kind, syntheye_dir)
    frame = base_frame.copy()
    frame.loc[5, column] = f"broken/{name}"
    table = _write_table(frame, workdir / "t.parquet")
    outcome = run_cli("grok-validate", f"table={table}")
    assert outcome.code == TABLE_PROBLEMS, outcome
    line = outcome.error_line("grok-validate")
    assert all(part in line for part in (str(table), "row 6", column, f"broken/{name}", "bad_image")), line


def test_an_image_path_that_leaves_the_folder_for_a_non_image_is_a_problem(
    base_frame: pd.DataFrame, workdir: Path, run_cli
) -> None:
    frame = base_frame.copy()
    (workdir / "secret.txt").write_text("password\n")
    frame.loc[2, "cfp_path"] = "../" + workdir.name + "/secret.txt"
    frame.loc[4, "oct_path"] = "t.parquet"  # the table itself
    table = _write_table(frame, workdir / "t.parquet")
    outcome = run_cli("grok-validate", f"table={table}")
    assert outcome.code == TABLE_PROBLEMS
    line = outcome.error_line("grok-validate")  # the OCT column is checked first
    assert "row 5, column 'oct_path'" in line and "t.parquet: unsupported OCT format" in line and "+1 more" in line
    assert "row 3, column 'cfp_path'" in outcome.out and "secret.txt" in outcome.out


# ------------------------------------------------------------------ files that are not tables (exit 2)


def _write_raw(kind: str, frame: pd.DataFrame, folder: Path) -> tuple[Path, str]:
    """A file that cannot be read as the table its name says, and the text that must explain why."""
    csv_text = frame.to_csv(index=False)
    parquet = folder / "real.parquet"
    frame.to_parquet(parquet)
    files: dict[str, tuple[str, bytes, str]] = {
        "empty_csv": ("t.csv", b"", "empty (0 bytes)"),
        "empty_parquet": ("t.parquet", b"", "empty (0 bytes)"),
        "blank_lines_csv": ("t.csv", b"\n\n\n", "no header row"),
        "semicolon_csv": ("t.csv", frame.to_csv(index=False, sep=";").encode(), "semicolon-separated"),
        "tab_csv": ("t.csv", frame.to_csv(index=False, sep="\t").encode(), "tab-separated"),
        "comma_tsv": ("t.tsv", csv_text.encode(), "comma-separated"),
        "parquet_named_csv": ("t.csv", parquet.read_bytes(), "is a Parquet file"),
        "parquet_named_tsv": ("t.tsv", parquet.read_bytes(), "is a Parquet file"),
        "csv_named_parquet": ("t.parquet", csv_text.encode(), "not a Parquet file"),
        "csv_named_upper_parquet": ("T.PARQUET", csv_text.encode(), "not a Parquet file"),
        "excel_named_csv": ("t.csv", b"PK\x03\x04" + b"\x00" * 40, "Excel/ZIP"),
        "truncated_parquet": ("t.parquet", parquet.read_bytes()[:2000], "corrupt or truncated Parquet"),
        "latin1_csv": ("t.csv", csv_text.replace("Normal", "Normal µ").encode("latin-1"), "not UTF-8"),
        "long_rows_csv": ("t.csv", csv_text.replace("\n", ",extra\n").replace(",extra\n", "\n", 1).encode(), "fields"),
    }
    name, data, why = files[kind]
    path = folder / name
    path.write_bytes(data)
    return path, why


UNREADABLE = [
    "empty_csv",
    "empty_parquet",
    "blank_lines_csv",
    "semicolon_csv",
    "tab_csv",
    "comma_tsv",
    "parquet_named_csv",
    "parquet_named_tsv",
    "csv_named_parquet",
    "csv_named_upper_parquet",
    "excel_named_csv",
    "truncated_parquet",
    "latin1_csv",
    "long_rows_csv",
]


@pytest.mark.parametrize("kind", UNREADABLE)
def test_grok_validate_names_a_file_that_is_not_a_table(
    kind: str, base_frame: pd.DataFrame, workdir: Path, run_cli
) -> None:
    path, why = _write_raw(kind, base_frame, workdir)
    outcome = run_cli("grok-validate", f"table={path}")
    assert outcome.code == BAD_INPUT, outcome
    line = outcome.error_line("grok-validate")
    assert str(path) in line and why in line, line


# -------------------------------------------------------- the stages that read the table fail in one line


@pytest.mark.parametrize(
    ("kind", "culprit"),
    [
        ("semicolon_csv", ["semicolon-separated"]),
        ("parquet_named_csv", ["is a Parquet file"]),
        ("nan_text_subject_id", ["row 4", "subject_id", "'nan'"]),
        ("fractional_count", ["row 4", "drusen_count", "2.5"]),
        ("truncated_png", ["row 6", "oct_path", "broken/scan.png"]),
    ],
)
def test_grok_generate_stops_in_one_line(
    kind: str, culprit: list[str], base_frame: pd.DataFrame, workdir: Path, syntheye_dir: Path, run_cli
) -> None:
    table = _bad_table(kind, base_frame, workdir, syntheye_dir)
    outcome = run_cli("grok-generate", f"input_table={table}", "progress=false")
    assert outcome.code == BAD_INPUT, outcome
    line = outcome.error_line("grok-generate")
    assert str(table) in line and all(part in line for part in culprit), line
    assert not (workdir / "data" / "instructions" / "train.jsonl").exists()


@pytest.mark.parametrize("kind", ["truncated_png"])
def test_grok_train_align_stops_in_one_line(
    kind: str, base_frame: pd.DataFrame, workdir: Path, syntheye_dir: Path, run_cli
) -> None:
    table = _bad_table(kind, base_frame, workdir, syntheye_dir)
    outcome = run_cli("grok-train-align", f"data.table_path={table}", "trainer.max_epochs=1")
    assert outcome.code == BAD_INPUT, outcome
    line = outcome.error_line("grok-train-align")
    assert str(table) in line and ("broken/scan.png" in line if kind == "truncated_png" else "tab-separated" in line)


def _bad_table(kind: str, frame: pd.DataFrame, folder: Path, syntheye_dir: Path) -> Path:
    if kind in UNREADABLE:
        return _write_raw(kind, frame, folder)[0]
    frame = frame.copy()
    if kind == "truncated_png":
        _write_image(folder / "broken" / "scan.png", kind, syntheye_dir)
        frame.loc[5, "oct_path"] = "broken/scan.png"
    else:
        VALUE_CASES[kind][1](frame)
    return _write_table(frame, folder / "t.parquet")


# ------------------------------------------------------------- images that do not look like their modality


@pytest.mark.parametrize(
    ("column", "make", "says"),
    [
        ("cfp_path", lambda rgb: rgb.mean(axis=-1).astype(np.uint8), "greyscale"),  # one channel
        ("cfp_path", lambda rgb: np.repeat(rgb[..., 1:2], 3, axis=-1), "greyscale"),  # R == G == B
        ("oct_path", lambda rgb: rgb, "in colour"),  # a fundus photograph given as the OCT
    ],
)
def test_an_image_unlike_its_modality_is_read_with_one_warning(
    column: str, make, says: str, base_frame: pd.DataFrame, workdir: Path, syntheye_dir: Path, run_cli
) -> None:
    rgb = np.asarray(Image.open(syntheye_dir / "cfp" / "S000001_R.png").convert("RGB"))
    image = workdir / "broken" / "odd.png"
    Image.fromarray(make(rgb)).save(image)
    frame = base_frame.copy()
    frame.loc[[1, 6], column] = "broken/odd.png"  # two rows, one file: one warning
    outcome = run_cli("grok-validate", f"table={_write_table(frame, workdir / 't.parquet')}")
    assert outcome.code == 0, outcome
    warnings = [line for line in outcome.err.splitlines() if "odd.png" in line]
    assert len(warnings) == 1 and says in warnings[0] and "WARNING" in warnings[0], outcome.err


# ------------------------------------------------------------------------------- mistyped config values


@pytest.mark.parametrize(
    ("program", "override", "expected"),
    [
        ("grok-validate", "check_images=maybe", "a boolean"),
        ("grok-validate", "max_listed=many", "an integer"),
        ("grok-generate", "seed=abc", "an integer"),
        ("grok-generate", "split.fractions.train=most", "a number"),
        ("grok-train-align", "trainer.max_epochs=abc", "an integer"),
        ("grok-train-align", "loss.temperature=warm", "a number"),
    ],
)
def test_a_mistyped_override_fails_naming_key_value_and_type(
    program: str, override: str, expected: str, workdir: Path, run_cli
) -> None:
    outcome = run_cli(program, override)
    assert outcome.code == BAD_INPUT, outcome
    line = outcome.error_line(program)
    key, value = override.split("=")
    assert f"{key} expects {expected}" in line and repr(value) in line, line


@pytest.mark.parametrize(
    "overrides",
    [
        ["report_file=null"],  # null for a text key
        ["max_listed=${oc.decode:'3'}"],  # an interpolation
        ["max_listed=5", "check_images=false"],  # the right types
        ["table=${paths.syntheye_dir}/biomarkers.parquet"],  # text for a text key
    ],
)
def test_legitimate_overrides_pass(overrides: list[str], syntheye_dir: Path, run_cli) -> None:
    outcome = run_cli("grok-validate", f"paths.syntheye_dir={syntheye_dir}", *overrides)
    assert outcome.code == 0, outcome
    assert "valid" in outcome.out


def test_the_type_check_accepts_what_lightning_and_omegaconf_accept(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from grok.utils.config import ConfigValueError, check_override_types, config_dir

    legitimate = [
        "trainer.gradient_clip_val=1",  # an int for a float
        "trainer.devices=auto",  # Lightning takes text for devices
        "trainer.deterministic=warn",
        "trainer.max_epochs=null",
        "tags=[a,b]",
        "seed=${num_threads}",
        f"paths.root_dir={tmp_path}",
        "hardware=gpu",  # a config group
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        check_override_types(compose("align", overrides=legitimate), legitimate, "align")
        wrong = [*legitimate, "trainer.log_every_n_steps=often"]
        with pytest.raises(ConfigValueError, match=r"trainer\.log_every_n_steps expects an integer .*'often'"):
            check_override_types(compose("align", overrides=wrong), wrong, "align")
