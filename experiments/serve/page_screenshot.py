"""The screenshots of docs/serve.md: the page in headless Chromium (Debian's chromium + chromium-driver) on an export.

1. `--out`: one SynthEye eye (its OCT, its CFP, its demographic/systemic row) through the real export, as a
   clinician would use the page.
2. `--grounded-out`: the same page fed a fixed report with a grounding list (tests/serve_helpers.GroundedEngine, the
   record shape the grounding rework returns), hovering one quantity: how grounded numbers are shown, until an
   export writes them itself.

    .venv/bin/python experiments/serve/page_screenshot.py --export artifacts/mllm --syntheye data/syntheye
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
ROW_COLUMNS = ("eye", "age_years", "sex", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2")


def eye_case(syntheye: Path, index: int) -> tuple[Path, Path, dict[str, str]]:
    """OCT path, CFP path and the page's field values for one row of a SynthEye table."""
    import pandas as pd

    row = pd.read_parquet(syntheye / "biomarkers.parquet").iloc[index]
    values = {c: (f"{row[c]:g}" if isinstance(row[c], float) else str(row[c])) for c in ROW_COLUMNS if pd.notna(row[c])}
    return syntheye / row["oct_path"], syntheye / row["cfp_path"], values


def shoot(app, case, out: Path, hover: bool, width: int) -> None:
    """Fill the page with `case`, generate, wait for the report, screenshot the whole page (palette PNG)."""
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from serve_helpers import LiveServer, chromium, fill_case

    with LiveServer(app) as live, chromium() as driver:
        driver.set_window_size(width, 900)
        driver.get(f"{live.url}/")
        fill_case(driver, *case)
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 600).until(lambda d: d.find_element(By.ID, "conclusion").text)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height + 140)
        if hover:
            marks = driver.find_elements(By.CSS_SELECTOR, "#report mark.q")
            ActionChains(driver).move_to_element(marks[0]).perform()
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "tooltip").is_displayed())
        driver.save_screenshot(str(out))
    Image.open(out).convert("RGB").quantize(colors=96).save(out, optimize=True)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=ROOT / "artifacts" / "mllm")
    parser.add_argument("--syntheye", type=Path, default=ROOT / "data" / "syntheye")
    parser.add_argument("--eye-index", type=int, default=3, help="row of the SynthEye table to show")
    parser.add_argument("--max-tokens", type=int, default=None, help="cap the report length (default: the export's)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serve_page.png")
    parser.add_argument("--grounded-out", type=Path, default=ROOT / "docs" / "serve_page_grounding.png")
    args = parser.parse_args()

    from grok.serve.app import create_app
    from grok.serve.engine import ReportEngine
    from grok.serve.settings import ServeSettings
    from helpers import compose_config
    from serve_helpers import GROUNDED_CASE, GroundedEngine

    overrides = [f"model_dir={args.export}"]
    if args.max_tokens:
        overrides.append(f"generation.max_new_tokens={args.max_tokens}")
    cfg = compose_config("serve", Path(tempfile.mkdtemp(prefix="grok-page-screenshot-")), overrides)
    settings = ServeSettings.from_config(cfg, None)
    engine = ReportEngine.from_config(cfg)
    case = eye_case(args.syntheye, args.eye_index)
    shoot(create_app(engine, settings), case, args.out, hover=False, width=args.width)
    grounded_case = (*case[:2], {**GROUNDED_CASE, "eye": case[2]["eye"]})  # the values the fixed report quotes
    shoot(create_app(GroundedEngine(engine), settings), grounded_case, args.grounded_out, hover=True, width=args.width)


if __name__ == "__main__":
    main()
