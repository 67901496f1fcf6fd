"""The shipped schema: its contents match the paper's inputs and its reference ranges depend on age and sex."""

from __future__ import annotations

import pytest
import yaml

from grok.schema import SchemaError, load_schema, parse_labels


def test_schema_declares_the_papers_biomarkers_and_labels() -> None:
    schema = load_schema()
    assert len(schema.oct_biomarkers) == 31
    assert all(schema.biomarkers[name].unit == "um" for name in schema.oct_biomarkers)
    assert set(schema.cfp_biomarkers) == {
        "cup_disc_ratio", "av_ratio", "arterial_tortuosity", "venular_tortuosity",
        "arterial_fractal_dim", "venular_fractal_dim",
    }  # fmt: skip
    assert schema.label_names == [
        "AMD", "Glaucoma", "Diabetes", "Hypertension", "Alzheimer", "DiabeticRetinopathy", "Normal",
    ]  # fmt: skip
    assert schema.normal_label == "Normal"
    for biomarker in schema.biomarkers.values():
        assert biomarker.source, f"{biomarker.name} has no source"
        if biomarker.reference is not None and biomarker.valid_range is not None:
            low, high = biomarker.valid_range
            assert low <= biomarker.reference.low <= biomarker.reference.high <= high, biomarker.name


def test_reference_range_changes_with_age_and_sex() -> None:
    schema = load_schema()
    assert schema.reference_range("gcipl_avg_um", age=50, sex="M") != schema.reference_range("gcipl_avg_um", 65, "M")
    assert schema.reference_range("macula_central_um", 50, "F") != schema.reference_range("macula_central_um", 50, "M")
    assert schema.reference_range("gcipl_avg_um", age=None, sex=None) == (63.0, 86.0)


def test_labels_parse_and_unknown_labels_are_named() -> None:
    assert parse_labels("Diabetes;DiabeticRetinopathy") == ["Diabetes", "DiabeticRetinopathy"]
    assert parse_labels(float("nan")) == []
    with pytest.raises(SchemaError, match="Cataract"):
        parse_labels("Cataract")


def test_a_user_schema_replaces_the_shipped_one(tmp_path) -> None:
    labels = tmp_path / "labels.yaml"
    labels.write_text(yaml.safe_dump({"labels": [{"name": "Cataract"}, {"name": "Clear", "normal": True}]}))
    schema = load_schema(labels_path=str(labels))
    assert schema.label_names == ["Cataract", "Clear"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"biomarkers": {"x_um": {"display": "x", "modality": "oct"}}}))
    with pytest.raises(SchemaError, match=r"broken.yaml: biomarkers.x_um: missing required key 'dtype'"):
        load_schema(biomarkers_path=str(broken))
