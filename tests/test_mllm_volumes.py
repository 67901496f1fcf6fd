"""OCT volumes in the MLLM: the slice aggregator, volumes read from a slice folder, a multi-page TIFF and a Heidelberg
`.vol` into the frozen encoder ([S, N, D] tokens per eye), and grok-train-mllm with `data.oct_slices` through export
and inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import load_file

from grok.cli.infer import run as infer
from grok.cli.train_mllm import run as train_mllm
from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.mllm.datamodule import InstructionDataset, image_transforms
from grok.models.slices import SliceAttentionPool, slice_count
from mllm_helpers import tiny_overrides, write_instruction_fixture

SLICES = 5
TOKENS = quantity_tokens_of(GroundingSettings(), knowledge_base_of(GroundingSettings()))


def _as_volumes(instructions: Path) -> Path:
    """Turn every fixture OCT image into a 5-slice volume (even eyes a multi-page TIFF, odd ones a slice folder) whose
    slice i is the image plus 10 * i grey levels (the central slice is the image + 20); records name the volumes."""
    root = Path(json.loads((instructions / "manifest.json").read_text())["image_root"])
    for index, image in enumerate(sorted((root / "oct").glob("*.png"))):
        base = np.asarray(Image.open(image)).astype(np.int32)
        scans = np.stack([np.clip(base + 10 * i, 0, 255).astype(np.uint8) for i in range(SLICES)])
        if index % 2 == 0:
            (root / "oct_volume").mkdir(exist_ok=True)
            tifffile.imwrite(root / "oct_volume" / f"{image.stem}.tif", scans)
        else:
            folder = root / "oct_volume" / image.stem
            folder.mkdir(parents=True)
            for i, scan in enumerate(scans):
                Image.fromarray(scan).save(folder / f"slice_{i:03d}.png")
    volumes = {p.stem: p.relative_to(root).as_posix() for p in (root / "oct_volume").iterdir()}
    for split in ("train", "val", "test"):
        path = instructions / f"{split}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            if "oct" in record["images"]:
                record["images"]["oct"] = volumes[Path(record["images"]["oct"]).stem]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return instructions


@pytest.fixture(scope="module")
def volume_instructions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _as_volumes(write_instruction_fixture(tmp_path_factory.mktemp("mllm_volumes"), eyes_per_split=6))


def test_slice_count_of_each_selection() -> None:
    assert slice_count(None) is None and slice_count("central") == 1
    assert slice_count(7) == 7 and slice_count([0, 3, -1]) == 3
    with pytest.raises(ValueError, match="fixed number of slices"):
        slice_count("all")


def test_aggregator_starts_as_the_slice_mean_and_learns_which_slice_to_read() -> None:
    torch.manual_seed(0)
    pool = SliceAttentionPool(dim=16, num_slices=4, heads=2)
    tokens = torch.randn(8, 4, 3, 16)
    torch.testing.assert_close(pool(tokens), tokens.mean(dim=1))
    assert pool(tokens[:, 0]) is tokens[:, 0] or torch.equal(pool(tokens[:, 0]), tokens[:, 0])  # one image: as is
    with pytest.raises(ValueError, match="built for 4 slice"):
        pool(tokens[:, :3])
    optimiser = torch.optim.Adam(pool.parameters(), lr=0.05)
    for _ in range(150):  # the target is slice 2 alone: attention must move onto it
        batch = torch.randn(16, 4, 3, 16)
        loss = (pool(batch) - batch[:, 2]).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weights = pool.weights(torch.randn(16, 4, 3, 16)).mean(dim=(0, 2))  # [S, heads]
    assert (weights[2] > 0.7).all(), weights


def test_a_slice_folder_and_a_multipage_tiff_reach_the_encoder_slice_by_slice(volume_instructions: Path) -> None:
    from grok.mllm.model import GrokMLLM
    from grok.models.encoders import build_encoder

    records = [json.loads(line) for line in (volume_instructions / "train.jsonl").read_text().splitlines()]
    records = [r for r in records if "oct" in r["images"]][:4]
    kinds = {Path(r["images"]["oct"]).suffix for r in records}
    assert kinds == {".tif", ""}, kinds  # both formats among them
    root = Path(json.loads((volume_instructions / "manifest.json").read_text())["image_root"])
    transforms = image_transforms({"oct": {"family": "tiny", "image_size": 32}, "cfp": {"image_size": 32}})
    tokenizer = _tokenizer()
    volumes = InstructionDataset(records, tokenizer, root, transforms, oct_slices=3)
    central = InstructionDataset(records, tokenizer, root, transforms)
    for record in records:
        stack = volumes.load_image("oct", record["images"]["oct"])
        assert stack.shape == (3, 3, 32, 32)
        # slices 0, 2, 4 of +0, +20, +40 grey levels: brighter in order; without a selection, the central slice
        assert stack[0].mean() < stack[1].mean() < stack[2].mean()
        torch.testing.assert_close(central.load_image("oct", record["images"]["oct"]), stack[1])
    encoder = build_encoder(
        architecture={"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}, name="oct"
    )
    model = GrokMLLM(torch.nn.Linear(1, 1), {"oct": encoder}, torch.nn.Identity(), {"oct": 0})
    pixels = torch.stack([volumes.load_image("oct", r["images"]["oct"]) for r in records])
    tokens = model.encode_images("oct", pixels)
    assert tokens.shape == (4, 3, encoder.num_patches, 16)
    torch.testing.assert_close(tokens[:, 1], model.encode_images("oct", pixels[:, 1]))


def test_a_heidelberg_vol_reaches_the_encoder_as_its_slice_folder_or_tiff_does(volume_instructions: Path) -> None:
    pytest.importorskip("eyepy")
    from grok.data.io import read_oct_volume
    from grok.mllm.model import GrokMLLM
    from grok.models.encoders import build_encoder
    from heyex_vol import write_heyex_vol

    root = Path(json.loads((volume_instructions / "manifest.json").read_text())["image_root"])
    records = [json.loads(line) for line in (volume_instructions / "val.jsonl").read_text().splitlines()]
    records = [r for r in records if "oct" in r["images"]][:2]
    (root / "oct_vol").mkdir(exist_ok=True)
    as_vol = []
    for record in records:  # the same five B-scans, now a Heidelberg file
        name = f"oct_vol/{Path(record['images']['oct']).stem}.vol"
        write_heyex_vol(root / name, read_oct_volume(root / record["images"]["oct"]))
        as_vol.append({**record, "images": {**record["images"], "oct": name}})
    transforms = image_transforms({"oct": {"family": "tiny", "image_size": 32}, "cfp": {"image_size": 32}})
    volumes = InstructionDataset([*records, *as_vol], _tokenizer(), root, transforms, oct_slices=3)
    for original, heyex in zip(records, as_vol, strict=True):
        stack = volumes.load_image("oct", heyex["images"]["oct"])
        assert stack.shape == (3, 3, 32, 32)
        torch.testing.assert_close(stack, volumes.load_image("oct", original["images"]["oct"]), rtol=0, atol=0)
    encoder = build_encoder(
        architecture={"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}, name="oct"
    )
    model = GrokMLLM(torch.nn.Linear(1, 1), {"oct": encoder}, torch.nn.Identity(), {"oct": 0})
    pixels = torch.stack([volumes.load_image("oct", r["images"]["oct"]) for r in as_vol])
    assert model.encode_images("oct", pixels).shape == (2, 3, encoder.num_patches, 16)


def test_train_export_infer_with_oct_volumes(make_config, volume_instructions: Path, tmp_path: Path) -> None:
    options = ["data.oct_slices=3", "trainer.max_epochs=1", "adaptation=full"]
    cfg = make_config("mllm", tiny_overrides(volume_instructions, options))
    train_mllm(cfg)
    export = tmp_path / "artifacts" / "mllm"
    trainable = load_file(str(export / "trainable.safetensors"))
    assert any(key.startswith("model.slice_aggregator.") for key in trainable), sorted(trainable)[:5]
    cached = [load_file(str(path)) for path in (export / "feature_cache").glob("oct-*.safetensors")]
    assert len(cached) == 1 and {tuple(t.shape[:2]) for t in cached[0].values()} == {(3, 16)}
    # the ridge read-out fits on every slice's tokens (3 slices x 16 patches x width 32)
    assert trainable["model.grounding.ridge_readout.oct.weight"].shape[1] == 3 * 16 * 32
    infer_cfg = make_config(
        "infer", [f"instructions_dir={volume_instructions}", "generation.max_new_tokens=4", "progress=false"]
    )
    rows = [json.loads(line) for line in infer(infer_cfg).read_text().splitlines()]
    assert len(rows) == 6 and not any("images_absent" in row for row in rows)
    # without the CFP image: the rows say so; a CFP quantity the tiny LM quotes is absent, never a value (the
    # resolution itself: test_infer_missing_modality.py)
    absent_cfg = make_config(
        "infer",
        [f"instructions_dir={volume_instructions}", "generation.max_new_tokens=24", "progress=false",
         "images_absent=[cfp]"],
    )  # fmt: skip
    rows = [json.loads(line) for line in infer(absent_cfg).read_text().splitlines()]
    assert len(rows) == 6 and all(row["images_absent"] == ["cfp"] for row in rows)
    cfp_keys = set(TOKENS.image_keys["cfp"])
    quoted = [q for row in rows for q in row.get("grounding", {}).get("quantities", []) if q["key"] in cfp_keys]
    assert all(q["source"] == "absent" and q["value"] is None for q in quoted if q["kind"] == "value")
    from grok.serve.engine import ReportEngine

    with pytest.raises(ValueError, match=r"reads OCT volumes \(data.oct_slices=3\)"):  # serving takes single images
        ReportEngine(export, device="cpu", default_prompt="Write the report.")
    # another selection never reuses these features: its cache file is keyed by the selection
    train_mllm(make_config("mllm", tiny_overrides(volume_instructions, ["data.oct_slices=[0,4]", *options[1:]])))
    caches = {tuple(next(iter(load_file(str(p)).values())).shape[:1]) for p in (export / "feature_cache").glob("oct-*")}
    assert caches == {(3,), (2,)}


def _tokenizer():
    from grok.mllm.tokenizer import build_tokenizer

    return build_tokenizer()


def test_stage_one_names_each_eyes_volume_with_image_columns(make_config, tmp_path: Path) -> None:
    from grok.cli.generate import run_generate
    from grok.data.synth import write_syntheye

    data = tmp_path / "syn"
    volume = {"enabled": True, "num_slices": 7, "formats": ["tiff"]}
    write_syntheye(data, n_subjects=3, seed=5, progress=False, oct_volume=volume)
    table = f"input_table={data}/biomarkers.parquet"
    out = tmp_path / "instructions"
    run_generate(make_config("generate", [table, f"output_dir={out}", "image_columns.oct=oct_volume_path"]))
    records = [json.loads(line) for split in ("train", "val", "test") for line in (out / f"{split}.jsonl").open()]
    assert records and all(r["images"]["oct"] == f"oct_volume/{r['eye_id']}.tif" for r in records)
    assert all(r["images"]["cfp"] == f"cfp/{r['eye_id']}.png" for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["image_columns"] == {"oct": "oct_volume_path", "cfp": "cfp_path"}
    (out / "train.jsonl").write_text("kept\n")
    with pytest.raises(ValueError, match=r"no column 'oct_volumes' \(image_columns\.oct\)"):
        run_generate(make_config("generate", [table, f"output_dir={out}", "image_columns.oct=oct_volumes"]))
    assert (out / "train.jsonl").read_text() == "kept\n"  # refused before anything is written


@pytest.fixture(scope="module")
def volume_syntheye(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from grok.data.synth import write_syntheye

    data = tmp_path_factory.mktemp("volume_syntheye")
    write_syntheye(data, n_subjects=24, seed=5, progress=False, oct_volume={"enabled": True, "num_slices": 7})
    return data


def test_alignment_reads_each_eyes_volume_and_pools_its_slices(make_config, volume_syntheye: Path) -> None:
    from hydra.utils import instantiate

    from grok.utils.train import train

    options = [f"paths.syntheye_dir={volume_syntheye}", "data.image_column=oct_volume_path", "data.oct_slices=3"]
    fast = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "data.batch_size=8", "test=false"]
    cfg = make_config("align", [*options, *fast, "+trainer.fast_dev_run=true", "callbacks=none", "logger=none"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    item = datamodule.datasets["val"][0]
    assert item["image"].shape == (3, 3, 64, 64)  # slices 0, 3, 6 of the 7-slice volume
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    module = objects["model"]
    assert module.slice_aggregator.position.abs().sum() > 0  # starts at zero: the optimiser trained it
    pooled = module.pooled_image(item["image"][None])
    assert pooled.shape == (1, module.image_encoder.embed_dim)
