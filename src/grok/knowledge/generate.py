"""Generation of the instruction JSONL: table -> engine -> writer -> {train,val,test}.jsonl + manifest.json.

Every record is a pure function of (row, seed, config), so a run is reproducible byte for byte. Records go to
`<split>.jsonl.partial` files; a state file records, at each checkpoint, how many rows are done and the byte length of
each partial file. An interrupted run resumes from its last checkpoint (partial files are truncated back to it) and
ends with the same bytes as an uninterrupted run. Final files appear by atomic rename; the manifest is written last.
So a failed or killed run leaves `*.jsonl.partial` files and the state file, which the next run of the same config
and input reuses (another config or input starts afresh, overwriting them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from grok.data.splits import split_of
from grok.data.table import read_table
from grok.grounding.spans import SPANS_FIELD, strip_conversation
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.engine import evaluate_row, missing_value
from grok.knowledge.instructions import STYLES, TASKS, EyeCase, InstructionBuilder, facts_json
from grok.knowledge.manifest import knowledge_base_record
from grok.knowledge.phrasing import PhraseRng
from grok.knowledge.writer import ReportWriter, conclude
from grok.schema.schema import parse_labels

FORMAT = "grok-instructions/1"
STATE_FILE = ".generate_state.json"
PARTIAL_SUFFIX = ".jsonl.partial"
REQUIRED_COLUMNS = ("subject_id", "eye")
IMAGE_COLUMNS = {"oct": "oct_path", "cfp": "cfp_path"}  # modality -> the table column of its image path
log = logging.getLogger(__name__)

# An optional hook that may rewrite a record in place (e.g. the LLM writer): (record, case) -> keep the record?
AnswerRewriter = Callable[[dict[str, Any], EyeCase], bool]


@dataclass
class GenerationPlan:
    """What to generate: splits, records per eye and task in each split, answer styles, seeds."""

    seed: int = 0
    split_seed: int = 0
    fractions: Mapping[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    mix: Mapping[str, Mapping[str, int]] = field(
        default_factory=lambda: {"train": {"report": 1}, "val": {"report": 1}, "test": {"report": 1}}
    )
    style_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    checkpoint_every: int = 500
    # the table column each modality's image path comes from (oct_volume_path: an OCT volume per eye)
    image_columns: Mapping[str, str] = field(default_factory=lambda: dict(IMAGE_COLUMNS))

    def validate(self) -> None:
        """Raise naming the config key when the plan is inconsistent."""
        unknown = sorted(set(self.image_columns) - set(IMAGE_COLUMNS))
        if unknown:
            raise ValueError(f"image_columns.{unknown[0]}: not a modality; expected some of {list(IMAGE_COLUMNS)}")
        for split, tasks in self.mix.items():
            if split not in self.fractions:
                raise ValueError(f"mix.{split}: not a split of split.fractions {list(self.fractions)}")
            for task, count in tasks.items():
                if task not in TASKS:
                    raise ValueError(f"mix.{split}.{task}: unknown task; expected one of {list(TASKS)}")
                if int(count) < 0:
                    raise ValueError(f"mix.{split}.{task}: expected a count >= 0, got {count}")
        for split, weights in self.style_weights.items():
            unknown = set(weights) - set(STYLES)
            if unknown or sum(weights.values()) <= 0:
                raise ValueError(
                    f"style_weights.{split}: expected positive weights over {list(STYLES)}, got {dict(weights)}"
                )
        test_mix = dict(self.mix.get("test", {}))
        if "test" in self.fractions and test_mix.get("report", 0) != 1:
            raise ValueError("mix.test.report must be 1: the benchmark needs exactly one report record per test eye")


def eye_ids(table: pd.DataFrame) -> list[str]:
    """'S000123_R' per row; '_v<visit>' is appended when an eye has several visits in the table."""
    base = [f"{s}_{e}" for s, e in zip(table["subject_id"].astype(str), table["eye"].astype(str), strict=True)]
    if len(set(base)) == len(base):
        return base
    if "visit" not in table.columns:
        raise ValueError("the table has several rows for one eye but no 'visit' column to tell them apart")
    ids = [f"{b}_v{int(v)}" if not missing_value(v) else b for b, v in zip(base, table["visit"], strict=True)]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate (subject_id, eye, visit) rows in the table")
    return ids


def eye_case(
    row: Mapping[str, Any], eye_id: str, kb: KnowledgeBase, image_columns: Mapping[str, str] | None = None
) -> EyeCase:
    """Evaluate one table row into an EyeCase: the engine's assessment and the conclusion its report states (also
    used by the benchmark to compute `facts` for external references from their biomarker table); its images are
    the paths in `image_columns` (modality -> column, default IMAGE_COLUMNS)."""
    assessment = evaluate_row(row, kb)
    labels = tuple(parse_labels(row.get(kb.schema.label_column), kb.schema))
    columns = IMAGE_COLUMNS if image_columns is None else image_columns
    images = {m: str(row[c]) for m, c in columns.items() if not missing_value(row.get(c))}
    return EyeCase(eye_id, str(row["eye"]), images, labels, assessment, conclude(assessment, labels))


class RecordFactory:
    """Builds every record of one eye (deterministic in the eye id, the seed and the plan)."""

    def __init__(self, kb: KnowledgeBase, builder: InstructionBuilder, plan: GenerationPlan) -> None:
        self.kb = kb
        self.builder = builder
        self.plan = plan

    def case(self, row: Mapping[str, Any], eye_id: str) -> EyeCase:
        """Evaluate one row into an EyeCase."""
        return eye_case(row, eye_id, self.kb, self.plan.image_columns)

    def style(self, split: str, rng: PhraseRng) -> str:
        """The answer style of a report record, drawn from the split's style weights."""
        weights = self.plan.style_weights.get(split) or {"structured": 1.0}
        names = [s for s in STYLES if weights.get(s, 0) > 0]
        threshold, cumulative = rng.random() * sum(weights[s] for s in names), 0.0
        for name in names:
            cumulative += weights[name]
            if threshold < cumulative:
                return name
        return names[-1]

    def records(
        self, row: Mapping[str, Any], eye_id: str, split: str, rewrite: AnswerRewriter | None = None
    ) -> tuple[EyeCase, list[str]]:
        """The eye's case and its JSON lines, in task order; the first report record's id is the eye id."""
        case = self.case(row, eye_id)
        facts = facts_json(case)
        labels = list(case.labels)
        lines = []
        for task in TASKS:
            for k in range(int(self.plan.mix.get(split, {}).get(task, 0))):
                rng = PhraseRng(f"{self.plan.seed}:{eye_id}:{task}:{k}")
                style = self.style(split, rng) if task == "report" else "structured"
                turns, spans = strip_conversation(self.builder.conversation(task, case, style, rng))
                record = {
                    "id": eye_id if task == "report" and k == 0 else f"{eye_id}-{task}-{k}",
                    "eye_id": eye_id,
                    "split": split,
                    "task": task,
                    "style": style,
                    "images": case.images,
                    "conversations": turns,
                    SPANS_FIELD: spans,  # where each value stands: [turn, start, end, symbol] (grok.grounding)
                    "labels": labels,
                }
                if rewrite is not None and not rewrite(record, case):
                    continue
                lines.append(json.dumps(record, ensure_ascii=False)[:-1] + ', "facts": ' + facts + "}\n")
        return case, lines


def report_record_for_row(
    table_path: str | Path,
    eye_id: str | None,
    kb: KnowledgeBase,
    builder: InstructionBuilder | None = None,
    seed: int = 0,
    validate_table: bool = True,
    check_images: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Stage one's `report` record for one row of a table, as `grok-generate` (same `seed`) writes it for a test eye
    (prompt, answer and facts), and the folder its image paths are relative to. `eye_id` is '<subject_id>_<eye>'."""
    if not eye_id:
        raise ValueError(f"{table_path}: which row? give an eye id ('<subject_id>_<eye>', e.g. S000123_R)")
    table = read_table(table_path, validate_table, check_images, schema=kb.schema)
    ids = eye_ids(table)
    if eye_id not in ids:
        raise ValueError(f"{table_path}: no row with eye id {eye_id!r}; ids look like {ids[:3]}")
    plan = GenerationPlan(seed=seed, fractions={"test": 1.0}, mix={"test": {"report": 1}})
    factory = RecordFactory(kb, builder or InstructionBuilder(ReportWriter(kb)), plan)
    _, lines = factory.records(table.iloc[ids.index(eye_id)].to_dict(), eye_id, "test")
    return json.loads(lines[0]), Path(table_path).resolve().parent


# ---------------------------------------------------------------------------------------------------- the run
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def fingerprint(parts: Iterable[Any]) -> str:
    """A stable hash of everything that determines the output (config, input file, KB and template files)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(part.read_bytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class RunSummary:
    """Counts of a generation run (stored in the manifest and printed)."""

    records: dict[str, dict[str, int]]
    eyes: dict[str, int]
    labels: dict[str, dict[str, int]]
    agreement: dict[str, Any]
    rewriter: dict[str, int]


def generate(
    table_path: str | Path,
    output_dir: str | Path,
    factory: RecordFactory,
    run_config: Mapping[str, Any],
    fingerprint_files: Sequence[Path] = (),
    progress: bool = True,
    limit: int | None = None,
    rewrite: AnswerRewriter | None = None,
    rewrite_stats: Callable[[], Mapping[str, int]] | None = None,
    validate_table: bool = True,
    check_images: bool = True,
) -> RunSummary:
    """Write `<split>.jsonl` and `manifest.json` under `output_dir`, resuming an interrupted run when possible.

    The table is read (and, unless `validate_table` is false, checked against the schema) before anything is written.
    """
    table_path = Path(table_path).resolve()
    table = read_table(table_path, validate_table, check_images, schema=factory.kb.schema, key="input_table")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{table_path}: missing required column(s) {missing}")
    # a table may have no images; a column named in place of the default must exist (a typo would drop every image)
    absent = {
        m: c for m, c in factory.plan.image_columns.items() if c not in table.columns and c != IMAGE_COLUMNS.get(m)
    }
    if absent:
        modality, column = next(iter(absent.items()))
        raise ValueError(
            f"{table_path}: no column {column!r} (image_columns.{modality}); columns: {list(table.columns)}"
        )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        table = table.iloc[: int(limit)]
    plan = factory.plan
    plan.validate()
    ids = eye_ids(table)
    rows = table.to_dict("records")
    splits = list(plan.fractions)
    stat = table_path.stat()
    key = fingerprint([dict(run_config), str(table_path), stat.st_size, stat.st_mtime_ns, *fingerprint_files])
    state = _load_state(output, key, splits)
    if state["rows_done"]:
        log.info("%s: resuming an interrupted run after %d of %d rows", output, state["rows_done"], len(rows))
    counters = {
        name: Counter(state["counters"].get(name, {}))
        for name in ("records", "eyes", "labels", "agreement", "rewriter")
    }
    handles = {}
    for split in splits:
        partial = output / f"{split}{PARTIAL_SUFFIX}"
        with open(partial, "ab"):
            pass
        os.truncate(partial, state["offsets"][split])
        handles[split] = open(partial, "a", encoding="utf-8")  # noqa: SIM115 (closed in finally)
    try:
        start = state["rows_done"]
        bar = tqdm(total=len(rows), initial=start, desc="generate", unit="eye", disable=not progress)
        for index in range(start, len(rows)):
            row, eye_id = rows[index], ids[index]
            split = split_of(str(row["subject_id"]), plan.split_seed, plan.fractions)
            case, lines = factory.records(row, eye_id, split, rewrite)
            handles[split].write("".join(lines))
            _count(counters, case, split, lines)
            bar.update(1)
            if (index + 1) % plan.checkpoint_every == 0:
                _checkpoint(output, key, index + 1, handles, counters, rewrite_stats)
        bar.close()
        _checkpoint(output, key, len(rows), handles, counters, rewrite_stats)
    finally:
        for handle in handles.values():
            handle.close()
    for split in splits:
        os.replace(output / f"{split}{PARTIAL_SUFFIX}", output / f"{split}.jsonl")
    summary = _summary(counters, splits)
    manifest = {
        "format": FORMAT,
        "image_root": str(table_path.parent),
        "table": str(table_path),
        "files": {split: f"{split}.jsonl" for split in splits},
        "knowledge_base": knowledge_base_record(factory.kb),
        "config": dict(run_config),
        "summary": summary.__dict__,
    }
    _atomic_write(output / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    (output / STATE_FILE).unlink(missing_ok=True)
    return summary


def _load_state(output: Path, key: str, splits: list[str]) -> dict[str, Any]:
    fresh = {"fingerprint": key, "rows_done": 0, "offsets": dict.fromkeys(splits, 0), "counters": {}}
    path = output / STATE_FILE
    if not path.exists():
        return fresh
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("fingerprint") != key or set(state.get("offsets", {})) != set(splits):
        return fresh  # another config or input: start over
    for split in splits:
        partial = output / f"{split}{PARTIAL_SUFFIX}"
        if not partial.exists() or partial.stat().st_size < state["offsets"][split]:
            return fresh
    return state


def _checkpoint(
    output: Path,
    key: str,
    rows_done: int,
    handles: Mapping[str, Any],
    counters: Mapping[str, Counter],
    rewrite_stats: Callable[[], Mapping[str, int]] | None,
) -> None:
    offsets = {}
    for split, handle in handles.items():
        handle.flush()
        offsets[split] = handle.tell()
    if rewrite_stats is not None:
        counters["rewriter"].clear()
        counters["rewriter"].update(rewrite_stats())
    state = {
        "fingerprint": key,
        "rows_done": rows_done,
        "offsets": offsets,
        "counters": {k: dict(v) for k, v in counters.items()},
    }
    _atomic_write(output / STATE_FILE, json.dumps(state, sort_keys=True))


def _count(counters: Mapping[str, Counter], case: EyeCase, split: str, lines: list[str]) -> None:
    for line in lines:
        task = line[line.index('"task": "') + 9 :].split('"', 1)[0]
        counters["records"][f"{split}/{task}"] += 1
    counters["eyes"][split] += 1
    labels = list(case.labels)
    for label in labels or ["(none)"]:
        counters["labels"][f"{split}/{label}"] += 1
    if labels:
        engine = set(case.assessment.labels)
        counters["agreement"]["eyes"] += 1
        counters["agreement"]["exact"] += engine == set(labels)
        counters["agreement"]["label_supported"] += bool(engine & set(labels))


def _nested(counter: Counter) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for compound, count in sorted(counter.items()):
        outer, inner = compound.split("/", 1)
        nested.setdefault(outer, {})[inner] = count
    return nested


def _summary(counters: Mapping[str, Counter], splits: list[str]) -> RunSummary:
    agreement = counters["agreement"]
    eyes = agreement.get("eyes", 0)
    return RunSummary(
        records=_nested(counters["records"]),
        eyes={split: counters["eyes"].get(split, 0) for split in splits},
        labels=_nested(counters["labels"]),
        agreement={
            "eyes": eyes,
            "exact_match": round(agreement.get("exact", 0) / eyes, 4) if eyes else None,
            "label_supported": round(agreement.get("label_supported", 0) / eyes, 4) if eyes else None,
        },
        rewriter=dict(sorted(counters["rewriter"].items())),
    )


def format_summary(summary: RunSummary) -> str:
    """A plain-text table of the summary for the console."""
    lines = ["records per split and task:"]
    for split, tasks in summary.records.items():
        lines.append(
            f"  {split:<6} eyes={summary.eyes.get(split, 0):<6} " + "  ".join(f"{t}={n}" for t, n in tasks.items())
        )
    lines.append("labels per split (eyes):")
    for split, labels in summary.labels.items():
        lines.append(f"  {split:<6} " + "  ".join(f"{label}={n}" for label, n in labels.items()))
    a = summary.agreement
    lines.append(
        f"engine vs table label: exact match {a['exact_match']}, "
        f"label supported {a['label_supported']} ({a['eyes']} eyes)"
    )
    if summary.rewriter:
        lines.append("llm writer: " + "  ".join(f"{k}={v}" for k, v in summary.rewriter.items()))
    return "\n".join(lines)
