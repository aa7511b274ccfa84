"""pyiqa's own dataset layout: ``datasets/meta_info/meta_info_<Name>Dataset.csv`` plus image folders.

A user who already has KonIQ-10k, SPAQ, LIVE-itW (LIVEC), FLIVE, KADID-10k, CSIQ, TID2013... laid out for
pyiqa points at the folder that holds ``meta_info/`` (``root``) and names the dataset as pyiqa does
(``pyiqa:koniq10k``). Paths, the official split and phase, the MOS direction and the row rules come
from pyiqa's ``default_dataset_configs.yml`` and dataset classes, read from the installed pyiqa:

* no-reference (``GeneralNRDataset``): column 0 image name, column 1 MOS;
* full-reference (``GeneralFRDataset``): column 0 reference name, column 1 distorted name, column 2 MOS;
* ``LIVEChallengeDataset`` drops its first 7 rows (the 7 training images), as pyiqa does;
* a split column (``official_split``, ``ratio802_seed123_split_01``...) keeps the rows of the phase.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from typing import Any

import yaml

from iqa_plugin.eval.datasets import (
    DatasetError,
    MosDataset,
    MosItem,
    Skipped,
    check_exists,
    join,
    parse_score,
    url_to_fs,
)

SUPPORTED_TYPES = ("GeneralNRDataset", "GeneralFRDataset", "LIVEChallengeDataset")
_LIVEC_TRAINING_ROWS = 7


def pyiqa_dataset_configs() -> dict[str, dict[str, Any]]:
    """pyiqa's ``default_dataset_configs.yml`` (name -> options) from the installed package."""
    text = resources.files("pyiqa").joinpath("default_dataset_configs.yml").read_text()
    return yaml.safe_load(text)


def _under_root(root: str, pyiqa_path: str) -> str:
    """pyiqa's ``./datasets/<rest>`` resolved under the user's ``root`` (the folder standing for ``datasets``)."""
    rest = pyiqa_path.strip()
    for prefix in ("./datasets/", "datasets/", "./"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    return join(root, rest.rstrip("/"))


def split_name(options: dict[str, Any]) -> str | None:
    """The split column pyiqa would read for these options (``None``: every row)."""
    index = options.get("split_index")
    if index is None:
        return None
    if isinstance(index, int):
        return f"ratio{options.get('split_ratio', '802')}_seed123_split_{index:02d}"
    return str(index)


def read_pyiqa_dataset(name: str, root: str, *, phase: str | None = None,
                       split_column: str | None = None) -> MosDataset:
    """Read dataset ``name`` (a key of pyiqa's configs, e.g. ``koniq10k``) laid out under ``root``.

    Args:
        name: pyiqa's dataset key (``koniq10k``, ``spaq``, ``livec``, ``flive``, ``kadid10k``, ``csiq``...).
        root: the folder that plays pyiqa's ``./datasets`` (holds ``meta_info/`` and the image folders).
        phase: ``train``/``val``/``test`` rows of the split column, or ``all``; default pyiqa's phase for
            this dataset when it names one, else ``test`` when the meta file has the split column.
        split_column: another split column than pyiqa's default (e.g. ``ratio802_seed123_split_03``).

    Raises:
        DatasetError: unknown name, an unsupported dataset type, or an unreadable meta-info file.
    """
    configs = pyiqa_dataset_configs()
    if name not in configs:
        import difflib

        close = difflib.get_close_matches(name, list(configs), n=3)
        raise DatasetError(f"pyiqa:{name}: pyiqa has no dataset {name!r}"
                           + (f"; did you mean {', '.join(close)}?" if close else "")
                           + f" Known: {', '.join(sorted(configs))}")
    options = configs[name]
    if options.get("type") not in SUPPORTED_TYPES:
        raise DatasetError(f"pyiqa:{name}: its type {options.get('type')} is not a MOS dataset of one image per "
                           f"row; supported types are {', '.join(SUPPORTED_TYPES)}")
    meta = _under_root(root, options["meta_info_file"])
    images = _under_root(root, options["dataroot_target"])
    refs = _under_root(root, options["dataroot_ref"]) if options.get("dataroot_ref") else images
    return read_meta_info(meta, images, ref_images=refs, full_reference=options["type"] == "GeneralFRDataset",
                          drop_first=_LIVEC_TRAINING_ROWS if options["type"] == "LIVEChallengeDataset" else 0,
                          split_column=split_column or split_name(options),
                          phase=phase or options.get("phase") or "test",
                          mos_lower_better=bool(options.get("lower_better", False)), name=name)


def read_meta_info(meta_csv: str, images: str, *, ref_images: str | None = None, full_reference: bool = False,
                   drop_first: int = 0, split_column: str | None = None, phase: str = "test",
                   mos_lower_better: bool = False, name: str | None = None) -> MosDataset:
    """Read a pyiqa ``meta_info_*.csv`` whose image names are relative to ``images``.

    The split column (when given and present) keeps the rows whose value is ``phase`` (``all``: every row).
    """
    try:
        fs, path = url_to_fs(meta_csv)
        text = fs.cat_file(path).decode("utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{meta_csv}: meta-info file not found; expected pyiqa's layout <root>/meta_info/"
                           "meta_info_<Name>Dataset.csv (pass the folder holding meta_info/ as --root)") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DatasetError(f"{meta_csv}: empty meta-info file")
    rows = list(reader)[drop_first:]
    notes = [f"pyiqa meta-info {meta_csv}"]
    split_index = None
    if split_column and phase != "all":
        if split_column in header:
            split_index = header.index(split_column)
            notes.append(f"{split_column} == {phase}")
        else:
            notes.append(f"no column {split_column}: every row used")
    mos_at = 2 if full_reference else 1
    items, skipped = [], []
    for line, row in enumerate(rows, start=2 + drop_first):
        if len(row) <= mos_at or not row[mos_at - 1].strip():
            skipped.append(Skipped(f"line {line}", "missing_path", f"{len(row)} cells"))
            continue
        if split_index is not None and (len(row) <= split_index or row[split_index].strip() != phase):
            continue
        image = row[mos_at - 1].strip()
        score = parse_score(row[mos_at])
        if score is None:
            skipped.append(Skipped(image, "bad_score", f"line {line}: {row[mos_at]!r}"))
            continue
        split = row[split_index].strip() if split_index is not None else None
        ref = join(ref_images or images, row[0].strip()) if full_reference else None
        items.append(MosItem(id=image, uri=join(images, image), mos=-score if mos_lower_better else score,
                             split=split, ref_uri=ref))
    kept, missing = check_exists(items, [images] + ([ref_images] if full_reference and ref_images else []))
    return MosDataset(name=name or meta_csv, source=meta_csv, items=kept, skipped=skipped + missing,
                      mos_lower_better=mos_lower_better, notes=notes)
