"""Instruction builders: one eye's assessment -> LLaVA-style conversations of each task type, plus its `facts`."""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from grok.knowledge.engine import Assessment, Quantity
from grok.knowledge.phrasing import Phrasebook, PhraseRng, capitalise
from grok.knowledge.writer import ABNORMAL, Conclusion, ReportWriter

TASKS = ("report", "diagnosis", "biomarker_qa", "evidence", "multiturn")
STYLES = ("structured", "narrative")
EYE_WORDS = {"R": "right", "L": "left"}
PERSON_WORDS = {"M": "man", "F": "woman"}
QUANTITY_FIELDS = Quantity._fields
IMAGE_NAMES = {"oct": "OCT", "cfp": "CFP"}  # the image modalities in prompt order, as the prompts name them
ABNORMAL_QUESTION_SHARE = 0.6  # biomarker questions ask about an abnormal value this often when one exists


@dataclass
class EyeCase:
    """One eye ready for instruction building: identity, images, labels, engine result and conclusion."""

    eye_id: str
    eye: str
    images: dict[str, str]  # modality -> path relative to the table's folder (absent modalities left out)
    labels: tuple[str, ...]
    assessment: Assessment
    conclusion: Conclusion
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # text shared by an eye's records


def build_facts(case: EyeCase, with_quantities: bool = True) -> dict[str, Any]:
    """The structured truth of one eye (contract 5 of the design notes) that the benchmark scores against."""
    a = case.assessment
    facts = {
        "findings": a.finding_ids,
        "finding_evidence": {f.id: list(f.biomarkers) for f in a.findings},
        "finding_severity": {f.id: f.severity for f in a.findings},
        "diagnoses": case.conclusion.labels,
        "engine_diagnoses": a.labels,
        "label_supported": case.conclusion.label_supported,
        "systemic": dict(a.systemic),
    }
    if with_quantities:
        facts["biomarkers"] = {q.name: q.value for q in a.quantities if q.value is not None}
        facts["missing"] = [q.name for q in a.quantities if q.value is None]
        facts["quantities"] = [dict(zip(QUANTITY_FIELDS, q, strict=True)) for q in a.quantities]
    return facts


def facts_json(case: EyeCase) -> str:
    """`json.dumps(build_facts(case), ensure_ascii=False)` byte for byte, written directly (the hot path)."""
    a = case.assessment
    measured, missing, quantities = [], [], []
    for name, value, unit, low, high, status in a.quantities:
        if value is None:
            missing.append(f'"{name}"')
            number = "null"
        else:
            number = repr(value)
            measured.append(f'"{name}": {number}')
        quantities.append(f"{_quantity_head(name)}{number}{_quantity_tail(unit, low, high, status)}")
    head = _dumps(build_facts(case, with_quantities=False))[:-1]
    return (
        f'{head}, "biomarkers": {{{", ".join(measured)}}}, "missing": [{", ".join(missing)}], '
        f'"quantities": [{", ".join(quantities)}]}}'
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@lru_cache(maxsize=1024)
def _quantity_head(name: str) -> str:
    return f'{{"name": "{name}", "value": '


@lru_cache(maxsize=8192)
def _quantity_tail(unit: str | None, low: float | None, high: float | None, status: str) -> str:
    return f', "unit": {_dumps(unit)}, "low": {_dumps(low)}, "high": {_dumps(high)}, "status": "{status}"}}'


def image_prefix(present: Collection[str], phrases: Phrasebook, rng: random.Random | PhraseRng) -> str:
    """A prompt's image lines: '<oct>\\n<cfp>\\n' for the images present; for one absent, the sentence saying so
    ('No OCT image.', phrase `image_absent`). Stage one, grok-infer and grok-serve build their prompts with it."""
    return "".join(
        f"<{modality}>\n" if modality in present else phrases.pick("image_absent", rng, image=name) + "\n"
        for modality, name in IMAGE_NAMES.items()
    )


class InstructionBuilder:
    """Builds the conversations of every task type for one eye with a ReportWriter's phrasings."""

    def __init__(self, writer: ReportWriter) -> None:
        self.writer = writer
        self.phrases = writer.phrases
        self.texts = writer.texts

    # ------------------------------------------------------------------------------------------ human turn pieces
    def image_prefix(self, case: EyeCase, rng: random.Random) -> str:
        """The prompt's image lines for the images this eye has (`image_prefix`)."""
        return image_prefix(case.images, self.phrases, rng)

    def _person(self, case: EyeCase) -> tuple[str, str, str]:
        systemic = case.assessment.systemic
        age = systemic.get("age_years")
        return (
            "unknown-age" if age is None else self.writer.number("age_years", age),
            PERSON_WORDS.get(systemic.get("sex") or "", "person"),
            EYE_WORDS.get(case.eye, case.eye),
        )

    def patient_line(self, case: EyeCase, rng: random.Random) -> str:
        """Demographic and systemic context given to the model (image quantities are read from the images).

        The systemic values are phrased once per eye (with the first record's RNG) and shared by its records.
        """
        systemic = case.memo.get("systemic")
        if systemic is None:
            systemic = case.memo["systemic"] = self._systemic_text(case, rng)
        age, person, eye = self._person(case)
        return self.phrases.pick(
            "patient_line", rng, age=age, age_cap=capitalise(age), person=person, eye=eye, systemic=systemic
        )

    def _systemic_text(self, case: EyeCase, rng: random.Random) -> str:
        by_name = case.assessment.by_name
        pick = self.phrases.pick
        items = []
        sbp, dbp = by_name["sbp_mmhg"], by_name["dbp_mmhg"]
        if sbp.value is not None and dbp.value is not None:
            bp = f"{self.writer.number('sbp_mmhg', sbp.value)}/{self.writer.number('dbp_mmhg', dbp.value)}"
            items.append(pick("systemic_items.bp", rng, value=bp))
        else:
            items.append(pick("systemic_missing", rng, name="BP"))
        for key, name, short in (("hba1c", "hba1c_mmol_mol", "HbA1c"), ("bmi", "bmi_kg_m2", "BMI")):
            quantity = by_name[name]
            if quantity.value is None:
                items.append(pick("systemic_missing", rng, name=short))
            else:
                items.append(pick(f"systemic_items.{key}", rng, value=self.writer.number(name, quantity.value)))
        return ", ".join(items) + "."

    def _first_human(self, case: EyeCase, prompt: str, rng: random.Random) -> dict[str, str]:
        return {"from": "human", "value": f"{self.image_prefix(case, rng)}{self.patient_line(case, rng)}\n{prompt}"}

    # ------------------------------------------------------------------------------------------ answers
    def report_answer(self, case: EyeCase, style: str, rng: random.Random) -> str:
        """The full diagnostic report in the given style."""
        if style == "structured":
            return self.writer.structured(case.assessment, case.conclusion, rng)
        age, person, eye = self._person(case)
        return self.writer.narrative(case.assessment, case.conclusion, rng, eye=eye, person=person, age=age)

    def _stated(self, case: EyeCase) -> list:
        return [d for d in case.conclusion.diagnoses if d.label != self.writer.normal_label]

    def _support(self, case: EyeCase, rng: random.Random) -> str:
        a = case.assessment
        return self.writer.support_text(self._stated(case), a.by_name, {f.id: f for f in a.findings}, rng)

    def diagnosis_answer(self, case: EyeCase, rng: random.Random) -> str:
        """The diagnosis and its key findings with evidence."""
        stated = self._stated(case)
        if not stated:
            return self.phrases.pick("diagnosis_answer_normal", rng, normals=self.writer.normals_text(case.assessment))
        diagnoses = self.writer.diagnoses_text(stated)
        return self.phrases.pick(
            "diagnosis_answer",
            rng,
            diagnoses=diagnoses,
            diagnoses_cap=capitalise(diagnoses),
            support=self._support(case, rng),
        )

    def evidence_turn(self, case: EyeCase, rng: random.Random) -> tuple[str, str]:
        """(question, answer): which findings support the stated diagnosis."""
        stated = self._stated(case)
        if not stated:
            question = self.phrases.pick("evidence_prompt_normal", rng)
            answer = self.phrases.pick("evidence_answer_normal", rng, normals=self.writer.normals_text(case.assessment))
            return question, answer
        label = self.writer.diagnoses_text(stated)
        question = self.phrases.pick("evidence_prompt", rng, label=label)
        return question, self.phrases.pick("evidence_answer", rng, label=label, support=self._support(case, rng))

    def choose_quantity(self, case: EyeCase, rng: random.Random) -> Quantity:
        """The biomarker a question asks about: often an abnormal one, else one of the report's listed quantities."""
        listed = [
            q for q in self.writer.listed_quantities(case.assessment) if self.texts[q.name].modality != "systemic"
        ]
        abnormal = [q for q in listed if q.status in ABNORMAL]
        pool = abnormal if abnormal and rng.random() < ABNORMAL_QUESTION_SHARE else listed
        return pool[int(rng.random() * len(pool))]

    def biomarker_turn(self, case: EyeCase, rng: random.Random) -> tuple[str, str]:
        """(question, answer) about one biomarker's value and its normal range."""
        quantity = self.choose_quantity(case, rng)
        text = self.texts[quantity.name]
        question = self.phrases.pick("biomarker_prompt", rng, name=text.label)
        if quantity.value is None:
            return question, self.phrases.pick(
                "biomarker_answer_missing", rng, name=text.label, name_cap=capitalise(text.label)
            )
        answer = self.phrases.pick(
            "biomarker_answer",
            rng,
            name=text.label,
            name_cap=capitalise(text.label),
            value=self.writer.value(quantity),
            range=self.writer.range_text(quantity),
            status=self.phrases.pick(f"status.{quantity.status}", rng),
        )
        return question, answer

    # ------------------------------------------------------------------------------------------ conversations
    def conversation(self, task: str, case: EyeCase, style: str, rng: random.Random) -> list[dict[str, str]]:
        """The turns of one record of `task`."""
        if task == "report":
            prompt = self.phrases.pick("report_prompt" if style == "structured" else "narrative_prompt", rng)
            return [self._first_human(case, prompt, rng), _gpt(self.report_answer(case, style, rng))]
        if task == "diagnosis":
            prompt = self.phrases.pick("diagnosis_prompt", rng)
            return [self._first_human(case, prompt, rng), _gpt(self.diagnosis_answer(case, rng))]
        if task == "biomarker_qa":
            question, answer = self.biomarker_turn(case, rng)
            return [self._first_human(case, question, rng), _gpt(answer)]
        if task == "evidence":
            question, answer = self.evidence_turn(case, rng)
            return [self._first_human(case, question, rng), _gpt(answer)]
        if task == "multiturn":
            prompt = self.phrases.pick("report_prompt", rng)
            turns = [self._first_human(case, prompt, rng), _gpt(self.report_answer(case, "structured", rng))]
            for question, answer in (self.evidence_turn(case, rng), self.biomarker_turn(case, rng)):
                turns += [{"from": "human", "value": question}, _gpt(answer)]
            return turns
        raise ValueError(f"unknown instruction task {task!r}; expected one of {list(TASKS)}")


def _gpt(text: str) -> dict[str, str]:
    return {"from": "gpt", "value": text}
