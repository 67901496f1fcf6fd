"""`facts` for external references: computed from the user's biomarker table by stage one's own code path.

A reference file from outside GROK (another dataset, the paper's release, a CSV of reports) has labels and reports
but no `facts`, and task 3 cannot be scored without them. Given the eyes' biomarker table, each eye's facts are what
`grok-generate` would have written for it: `grok.knowledge.generate.eye_case` (engine + conclusion) and
`grok.knowledge.instructions.build_facts`, keyed by the same eye ids (`<subject_id>_<eye>`, `_v<visit>` when an
eye has several visits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from grok.bench.references import Reference, ReferenceError
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.generate import eye_case, eye_ids, read_table
from grok.knowledge.instructions import build_facts


def facts_status(references: Sequence[Reference]) -> str | None:
    """None when every reference has facts, else the one-line reason task 3 cannot be scored."""
    missing = sum(not r.facts for r in references)
    if not missing:
        return None
    return (
        f"{missing} of {len(references)} references carry no `facts` (structured truth) and no `reference_table` "
        "was given; task 3 and the fact-based rubric items compare each report with the eye's measurements: "
        "`grok-eval reference_table=<biomarker table>` computes them with the knowledge engine"
    )


def with_table_facts(references: Sequence[Reference], table_path: str | Path, kb: KnowledgeBase) -> list[Reference]:
    """The references, those without `facts` given the facts stage one computes from their row of the table.

    When the table has no label column, the reference's own labels stand in for it (stage one reads the labels from
    the table). Raises ReferenceError naming the table and the ids that have no row.
    """
    table = read_table(table_path)
    rows = dict(zip(eye_ids(table), table.to_dict("records"), strict=True))
    label_column = kb.schema.label_column
    missing = [r.id for r in references if not r.facts and r.id not in rows]
    if missing:
        raise ReferenceError(
            f"{table_path}: no row for {len(missing)} reference id(s), e.g. {missing[:5]}; the table's eye ids are "
            f"<subject_id>_<eye> (plus _v<visit> when an eye has several visits), e.g. {list(rows)[:3]}"
        )
    completed = []
    for reference in references:
        if reference.facts:
            completed.append(reference)
            continue
        row = dict(rows[reference.id])
        if label_column not in table.columns:
            row[label_column] = ";".join(reference.labels)
        completed.append(replace(reference, facts=build_facts(eye_case(row, reference.id, kb))))
    return completed
