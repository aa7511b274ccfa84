"""A CSV of rated images, ``(path, score[, split][, ref])``, or a folder / prefix holding exactly one CSV.

>>> # mos.csv:  path,mos,split
>>> #           a.jpg,3.2,test
>>> ds = read_csv_dataset("photos/")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import posixpath

from iqa_plugin.eval.datasets import (
    PATH_COLUMNS,
    REF_COLUMNS,
    SCORE_COLUMNS,
    SPLIT_COLUMN,
    DatasetError,
    MosDataset,
    MosItem,
    Skipped,
    check_exists,
    join,
    parse_score,
    pick_column,
    url_to_fs,
)

#: File names tried, in order, when the source is a folder that holds several CSVs.
PREFERRED_NAMES = ("mos.csv", "scores.csv", "labels.csv", "metadata.csv")


def find_csv(src: str) -> str:
    """The CSV file named by ``src``: the file itself, or the one CSV inside the folder/prefix."""
    try:
        fs, path = url_to_fs(src)
        fs.invalidate_cache()  # a long-lived process must see the store as it is now
        if fs.isfile(path):
            return src
        if not fs.isdir(path):
            raise DatasetError(f"{src}: not found; expected a CSV file or a folder/prefix holding one")
        csvs = sorted(p for p in fs.ls(path, detail=False) if p.lower().endswith(".csv"))
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(f"{src}: cannot be read ({type(error).__name__}: {str(error)[:160]}); "
                           "check the path and, for s3://, AWS_ENDPOINT_URL and the credentials") from None
    if not csvs:
        raise DatasetError(f"{src}: no .csv inside; put a CSV of (path, score) there or pass the CSV itself")
    names = {posixpath.basename(p): p for p in csvs}
    chosen = next((names[n] for n in PREFERRED_NAMES if n in names), None)
    if chosen is None and len(csvs) > 1:
        raise DatasetError(f"{src}: several CSVs ({', '.join(sorted(names))}); pass the one with the scores")
    chosen = chosen or csvs[0]
    return fs.unstrip_protocol(chosen) if "://" in src else chosen


def read_rows(csv_uri: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (UTF-8, BOM tolerated)."""
    fs, path = url_to_fs(csv_uri)
    text = fs.cat_file(path).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise DatasetError(f"{csv_uri}: empty CSV; expected a header row such as 'path,mos'")
    return list(reader.fieldnames), list(reader)


def read_csv_dataset(src: str, *, path_column: str | None = None, score_column: str | None = None,
                     split_column: str | None = None, ref_column: str | None = None,
                     mos_lower_better: bool | None = None) -> MosDataset:
    """Read a CSV dataset; image paths are relative to the CSV's folder unless absolute or URLs.

    ``mos_lower_better``: ``None`` guesses from the column name (``dmos`` is lower-is-better); the
    MOS is negated then, so every :class:`MosItem` is higher-is-better.
    """
    csv_uri = find_csv(src)
    header, rows = read_rows(csv_uri)
    path_col = pick_column(header, path_column, PATH_COLUMNS, "path column", csv_uri)
    score_col = pick_column([c for c in header if c != path_col], score_column, SCORE_COLUMNS,
                            "score column", csv_uri)
    split_col = pick_column(header, split_column, (SPLIT_COLUMN,), "split column", csv_uri, required=False)
    ref_col = pick_column(header, ref_column, REF_COLUMNS, "ref column", csv_uri, required=False)
    lower = mos_lower_better if mos_lower_better is not None else str(score_col).lower().startswith("dmos")
    base = csv_uri.rsplit("/", 1)[0] if "/" in csv_uri else "."
    items: list[MosItem] = []
    skipped: list[Skipped] = []
    for line, row in enumerate(rows, start=2):
        relative = (row.get(path_col) or "").strip()
        if not relative:
            skipped.append(Skipped(f"line {line}", "missing_path", "empty path cell"))
            continue
        score = parse_score(row.get(score_col))
        if score is None:
            skipped.append(Skipped(relative, "bad_score", f"line {line}: {row.get(score_col)!r}"))
            continue
        ref = (row.get(ref_col) or "").strip() if ref_col else ""
        split = (row.get(split_col) or "").strip() or None if split_col else None
        items.append(MosItem(id=relative, uri=join(base, relative), mos=-score if lower else score, split=split,
                             ref_uri=join(base, ref) if ref else None))
    kept, missing = check_exists(items, [base])
    name = posixpath.basename(src.rstrip("/")) or csv_uri
    notes = [f"csv {csv_uri}: path={path_col}, score={score_col}" + (" (lower is better, negated)" if lower else "")]
    return MosDataset(name=name, source=src, items=kept, skipped=skipped + missing, mos_lower_better=lower,
                      notes=notes)
