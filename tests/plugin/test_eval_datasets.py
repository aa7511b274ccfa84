"""MOS dataset readers: CSV (folder, file, S3 prefix), Hugging Face datasets, pyiqa's layout, synthetic set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iqa_plugin.eval.datasets import DatasetError
from iqa_plugin.eval.load import detect_format, load_mos_dataset


def _photo_folder(root: Path, photos: list[Path], n: int = 3) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for index, photo in enumerate(photos[:n]):
        name = f"img{index}{photo.suffix}"
        shutil.copy(photo, root / name)
        names.append(name)
    return names


def test_csv_folder_reads_scores_splits_and_lists_bad_rows(tmp_path, photos):
    names = _photo_folder(tmp_path / "set" / "images", photos)
    (tmp_path / "set" / "mos.csv").write_text(
        "path,mos,split\n"
        f"images/{names[0]},3.5,test\nimages/{names[1]},4.0,train\nimages/{names[2]},2.25,test\n"
        "images/gone.jpg,3.0,test\n"  # missing file
        f"images/{names[0]},not-a-number,test\n"  # bad score
        ",1.0,test\n")  # no path
    ds = load_mos_dataset(str(tmp_path / "set"))
    assert [(i.id, i.mos, i.split) for i in ds.items] == [
        (f"images/{names[0]}", 3.5, "test"), (f"images/{names[1]}", 4.0, "train"), (f"images/{names[2]}", 2.25, "test")]
    assert Path(ds.items[0].uri) == tmp_path / "set" / "images" / names[0]
    assert ds.skipped_by_reason() == {"bad_score": 1, "missing_file": 1, "missing_path": 1}
    assert any(s.reason == "missing_file" and s.detail.endswith("gone.jpg") for s in ds.skipped)
    test = load_mos_dataset(str(tmp_path / "set" / "mos.csv"), split="test")
    assert [i.mos for i in test.items] == [3.5, 2.25]
    with pytest.raises(DatasetError, match="no split 'val'.*'test', 'train'"):
        load_mos_dataset(str(tmp_path / "set"), split="val")


def test_csv_dmos_is_negated_and_columns_can_be_named(tmp_path, photos):
    names = _photo_folder(tmp_path, photos, 2)
    (tmp_path / "ratings.csv").write_text(f"file,dmos\n{names[0]},10\n{names[1]},40\n")
    ds = load_mos_dataset(str(tmp_path / "ratings.csv"))
    assert [i.mos for i in ds.items] == [-10.0, -40.0] and ds.mos_lower_better
    (tmp_path / "other.csv").write_text(f"picture,rating_a\n{names[0]},1\n")
    named = load_mos_dataset(str(tmp_path / "other.csv"), path_column="picture", score_column="rating_a")
    assert [i.mos for i in named.items] == [1.0]
    with pytest.raises(DatasetError, match="cannot tell which column holds the path"):
        load_mos_dataset(str(tmp_path / "other.csv"))
    with pytest.raises(DatasetError, match="several CSVs"):
        load_mos_dataset(str(tmp_path))


def test_csv_on_an_s3_prefix(s3, photos):
    s3.mkdir("rated")
    s3.put(str(photos[0]), "rated/set/a.png")
    s3.pipe("rated/set/mos.csv", b"path,mos\na.png,2.5\nmissing.png,3\n")
    ds = load_mos_dataset("s3://rated/set/")
    assert [(i.uri, i.mos) for i in ds.items] == [("s3://rated/set/a.png", 2.5)]
    assert ds.skipped_by_reason() == {"missing_file": 1}


def test_hf_imagefolder_and_save_to_disk(tmp_path, photos):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "imagefolder"
    names = _photo_folder(folder, [p for p in photos if p.suffix == ".png"], 2)
    (folder / "metadata.csv").write_text(f"file_name,mos\n{names[0]},1.5\n{names[1]},\n")
    assert detect_format(str(folder)) == "hf"
    ds = load_mos_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert [(i.id, i.mos) for i in ds.items] == [(names[0], 1.5)]
    assert Path(ds.items[0].uri).resolve() == (folder / names[0]).resolve()
    assert ds.skipped_by_reason() == {"bad_score": 1}

    saved = tmp_path / "saved"
    table = datasets.Dataset.from_dict({"picture": [str(photos[0]), str(photos[1])], "quality": [0.2, 0.9]})
    table.cast_column("picture", datasets.Image()).save_to_disk(str(saved))
    ds = load_mos_dataset(str(saved), cache_dir=str(tmp_path / "cache"))
    assert [i.mos for i in ds.items] == [0.2, 0.9]
    for item, photo in zip(ds.items, photos, strict=False):  # bytes stored in Arrow, written out by content
        assert Path(item.uri).read_bytes() == photo.read_bytes()
        assert str(tmp_path / "cache") in item.uri


def test_hf_hub_name_offline_fails_in_one_line(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError, match="hf:someone/koniq-not-here: datasets could not load it") as info:
        load_mos_dataset("hf:someone/koniq-not-here")
    assert "\n" not in str(info.value)


def _pyiqa_opt(root: Path, meta: str, images: str, **extra) -> dict:
    return {"name": "t", "meta_info_file": str(root / "meta_info" / meta), "dataroot_target": str(root / images),
            **extra}


def test_pyiqa_layout_nr_matches_pyiqas_own_dataset_class(tmp_path, photos):
    from pyiqa.data.general_nr_dataset import GeneralNRDataset

    root = tmp_path / "datasets"
    names = _photo_folder(root / "koniq10k" / "512x384", photos, 5)
    (root / "meta_info").mkdir()
    rows = [f"{n},{10 + 7 * i:.1f},{'test' if i % 2 == 0 else 'train'}" for i, n in enumerate(names)]
    (root / "meta_info" / "meta_info_KonIQ10kDataset.csv").write_text(
        "image_name,MOS,official_split\n" + "\n".join(rows) + "\n")
    ours = load_mos_dataset("pyiqa:koniq10k", root=str(root))
    theirs = GeneralNRDataset(_pyiqa_opt(root, "meta_info_KonIQ10kDataset.csv", "koniq10k/512x384",
                                         phase="test", split_index="official_split"))
    assert [(Path(i.uri), i.mos) for i in ours.items] == [(Path(p), float(m)) for p, m in theirs.paths_mos]
    assert len(ours.items) == 3
    assert len(load_mos_dataset("pyiqa:koniq10k", root=str(root), split="all").items) == 5


def test_pyiqa_layout_fr_and_livec_rules(tmp_path, photos):
    from pyiqa.data.general_fr_dataset import GeneralFRDataset

    root = tmp_path / "datasets"
    names = _photo_folder(root / "kadid10k" / "images", photos, 4)
    (root / "meta_info").mkdir()
    (root / "meta_info" / "meta_info_KADID10kDataset.csv").write_text(
        "ref_name,dist_name,dmos\n" + "".join(f"{names[0]},{n},{1 + i * 0.5}\n" for i, n in enumerate(names[1:])))
    ours = load_mos_dataset("pyiqa:kadid10k", root=str(root))
    theirs = GeneralFRDataset(_pyiqa_opt(root, "meta_info_KADID10kDataset.csv", "kadid10k/images", phase="test"))
    assert [(Path(i.ref_uri), Path(i.uri), i.mos) for i in ours.items] == \
        [(Path(r), Path(d), float(m)) for r, d, m in theirs.paths_mos]
    assert ours.full_reference

    names = _photo_folder(root / "LIVEC" / "Images", photos, 8)
    names += [f"gone{i}.jpg" for i in range(2)]
    (root / "meta_info" / "meta_info_LIVEChallengeDataset.csv").write_text(
        "name,mos\n" + "".join(f"Images/{n},{i}\n" for i, n in enumerate(names)))
    livec = load_mos_dataset("pyiqa:livec", root=str(root))
    assert [i.mos for i in livec.items] == [7.0]  # first 7 rows are LIVE-itW's training images, as in pyiqa
    assert livec.skipped_by_reason() == {"missing_file": 2}


def test_pyiqa_layout_errors_name_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="did you mean koniq10k"):
        load_mos_dataset("pyiqa:koniq10", root=str(tmp_path))
    with pytest.raises(DatasetError, match="meta-info file not found.*--root"):
        load_mos_dataset("pyiqa:spaq", root=str(tmp_path))
    with pytest.raises(DatasetError, match="not a MOS dataset"):
        load_mos_dataset("pyiqa:bapps", root=str(tmp_path))


def test_synthetic_set_is_deterministic_and_full_reference(tmp_path):
    from iqa_plugin.eval.synthetic import build_synthetic

    a = build_synthetic(tmp_path / "a", size=48, photos=2, kinds=["gaussian_blur", "white_noise"], levels=[1, 5])
    b = build_synthetic(tmp_path / "b", size=48, photos=2, kinds=["gaussian_blur", "white_noise"], levels=[1, 5])
    assert len(a.items) == 2 * 2 * 2 and a.full_reference
    assert {i.group for i in a.items} == {"gaussian_blur", "white_noise"}
    assert sorted({i.mos for i in a.items}) == [-5.0, -1.0]
    for x, y in zip(a.items, b.items, strict=True):
        assert Path(x.uri).read_bytes() == Path(y.uri).read_bytes()
    stamp = Path(a.items[0].uri).stat().st_mtime_ns
    build_synthetic(tmp_path / "a", size=48, photos=2, kinds=["gaussian_blur", "white_noise"], levels=[1, 5])
    assert Path(a.items[0].uri).stat().st_mtime_ns == stamp  # same recipe: reused, not rewritten
    with pytest.raises(ValueError, match="not a known distortion"):
        build_synthetic(tmp_path / "c", size=48, photos=1, kinds=["blurr"])
