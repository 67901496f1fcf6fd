"""Helpers for the serving tests and the page screenshot: a tiny export, a live uvicorn server in a thread, headless
Chromium, and an engine whose reports carry a grounding list (the shape the grounding rework will return)."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grok.serve.engine import Generated, PreparedCase, ReportEngine, Sampling, TokenSink

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)
# The report and grounding of GroundedEngine: one quantity of each source, offsets into GROUNDED_REPORT.
GROUNDED_REPORT = (
    "Quantitative analysis: central subfield thickness ≈342 µm (normal 215–300 µm), thickened; blood pressure "
    "150/92 mmHg, raised.\nQualitative findings: centre-involving macular thickening.\nConclusion: AMD."
)

# page values matching the inputs GROUNDED_REPORT quotes
GROUNDED_CASE = {"eye": "R", "age_years": "63", "sex": "F", "sbp_mmhg": "150", "dbp_mmhg": "92"}


def grounding_of(text: str) -> dict[str, Any]:
    """A grounding record for GROUNDED_REPORT in the predictions-JSONL shape (offsets found in `text`)."""

    def at(shown: str) -> tuple[int, int]:
        start = text.index(shown)
        return start, start + len(shown)

    quantities = [
        ("macula_central_um", "value", 342.0, "≈342", "µm", "readout", 339.2),
        ("macula_central_um", "low", 215.0, "215", "µm", "knowledge_base", None),
        ("macula_central_um", "high", 300.0, "300", "µm", "knowledge_base", None),
        ("sbp_mmhg", "value", 150.0, "150", "mmHg", "input", None),
    ]
    items = []
    for key, kind, value, shown, unit, source, estimate in quantities:
        start, end = at(shown)
        items.append(
            {
                "key": key,
                "kind": kind,
                "value": value,
                "text": shown,
                "unit": unit,
                "source": source,
                "estimate": estimate,
                "start": start,
                "end": end,
            }
        )
    return {"source": "auto", "quantities": items}


class GroundedEngine:
    """The real engine for everything but the reply: a fixed report with its grounding (until the model gives one)."""

    def __init__(self, engine: ReportEngine, word_delay_s: float = 0.0) -> None:
        self.engine = engine
        self.word_delay_s = word_delay_s  # slows the stream so a page shows its progress

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(
        self,
        cases: Sequence[PreparedCase],
        sampling: Sampling,
        limits: Sequence[int],
        sinks: Sequence[TokenSink | None],
    ) -> list[Generated]:
        results = []
        for case, sink in zip(cases, sinks, strict=True):
            for word in GROUNDED_REPORT.split(" "):
                if sink is not None:
                    sink(word + " ")
                    time.sleep(self.word_delay_s)
            results.append(Generated(GROUNDED_REPORT, case.prompt_tokens, 60, "stop", grounding_of(GROUNDED_REPORT)))
        return results


def build_tiny_export(root: Path) -> Path:
    """A tiny GROK MLLM export (random weights, fully fine-tuned layout) in a second or two; returns its folder."""
    import hydra
    import torch

    from grok.mllm.export import export_mllm
    from helpers import compose_config
    from mllm_helpers import tiny_overrides, write_instruction_fixture

    instructions = write_instruction_fixture(root / "data")
    cfg = compose_config("mllm", root, tiny_overrides(instructions, ["adaptation=full"]))
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    return export_mllm(module, root / "export", cfg)


def data_url(path: Path) -> str:
    """A file as a base64 data URL."""
    kind = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(path.suffix.lower(), "octet-stream")
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode()


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def browser_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) from Debian's packages, or None where they are not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium under Selenium with a fresh profile (no network, nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binaries = browser_binaries()
    if binaries is None:
        raise RuntimeError("chromium/chromedriver not installed: `make web-test-tools` (apt-get, as root)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to fetch a browser or driver
    profile = tempfile.mkdtemp(prefix="grok-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=binaries[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


DROP_FILE_JS = """
const [zoneId, name, base64, type] = arguments;
const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, { type }));
const zone = document.getElementById(zoneId);
for (const kind of ["dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(kind, { dataTransfer: data, bubbles: true, cancelable: true }));
}
"""


def drop_file(driver: Any, zone_id: str, path: Path) -> None:
    """Drag and drop a file onto a page element (a real DragEvent with a DataTransfer holding the file)."""
    driver.execute_script(DROP_FILE_JS, zone_id, path.name, base64.b64encode(path.read_bytes()).decode(), "image/png")


def fill_case(driver: Any, oct_path: Path, cfp_path: Path, values: dict[str, str]) -> None:
    """Upload the OCT through the file input, drop the CFP onto its zone, type the biomarker values."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 30)
    wait.until(ready.presence_of_element_located((By.ID, "field-sbp_mmhg")))
    driver.find_element(By.ID, "file-oct").send_keys(str(oct_path))
    drop_file(driver, "drop-cfp", cfp_path)
    wait.until(lambda d: d.find_element(By.ID, "preview-oct").is_displayed())
    wait.until(lambda d: d.find_element(By.ID, "preview-cfp").is_displayed())
    for name, value in values.items():
        element = driver.find_element(By.ID, f"field-{name}")
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
