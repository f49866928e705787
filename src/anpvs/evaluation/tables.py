"""Tables in the paper's column layout, from evaluation records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import write_json, write_text

#: (header, metric key, digits) in the order of the paper's Table 1
COLUMNS: list[tuple[str, str, int]] = [
    ("Clean acc (%)", "clean_acc", 2),
    ("White-box PGD acc (%)", "pgd_acc", 2),
    ("Black-box acc (%)", "bb_pgd_acc", 2),
    ("White-box vuln.", "pgd_vulnerability", 3),
    ("Black-box vuln.", "bb_pgd_vulnerability", 3),
    ("Memory (%)", "memory_pct", 2),
    ("FLOPs (x)", "flops_speedup", 2),
    ("Measured speed-up (x)", "wallclock_speedup_b256", 2),  # wall-clock, masked / compacted, batch 256
    ("Sparsity (%)", "unit_sparsity", 2),
]


def markdown_table(rows: dict[str, list[dict[str, Any]]], columns: list[tuple[str, str, int]] = COLUMNS) -> str:
    """``rows`` maps a row label to the metric dicts of its seeds; cells show mean (± sample std over seeds).

    The plain form (no caption, no paper rows) of :func:`markdown_from_data`."""
    return markdown_from_data(table_data(rows, columns=columns)).rstrip("\n")


# --------------------------------------------------------------------------------------------------------
# Tables of a reproduction: mean ± std over seeds, the paper's numbers beside ours, md / csv / json
# --------------------------------------------------------------------------------------------------------

#: the paper's columns plus the weight sparsity (so that ADMM's row is comparable, docs/decisions.md item 5)
TABLE_COLUMNS: list[tuple[str, str, int]] = [*COLUMNS, ("Weight sparsity (%)", "weight_sparsity", 2)]


def autoattack_columns(n: int, unit: str = "images") -> list[tuple[str, str, int]]:
    """The AutoAttack column and PGD-40 on the same ``n`` test ``unit`` beside it (see :func:`with_autoattack`)."""
    return [(f"AutoAttack acc, {n} {unit} (%)", "autoattack_acc", 2), (f"PGD-40 acc, same {n} (%)", "aa_pgd_acc", 2)]


def with_autoattack(metrics: dict[str, Any], aa_metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` plus the AutoAttack accuracy, the PGD accuracy and the size of the subset of an
    ``attacks=["pgd", "autoattack"]`` evaluation (``aa_metrics``), under the keys of :func:`autoattack_columns`."""
    return {**metrics, "autoattack_acc": aa_metrics["autoattack_acc"], "aa_pgd_acc": aa_metrics["pgd_acc"],
            "aa_n": aa_metrics["n"]}


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of the finite values; ``std`` is the sample std (None for n < 2)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": mean, "std": std, "n": len(vals), "values": vals}


def table_data(rows: dict[str, list[dict[str, Any]]], *, columns: list[tuple[str, str, int]] = TABLE_COLUMNS,
               paper: dict[str, dict[str, float]] | None = None, row_keys: dict[str, str] | None = None,
               caption: str = "", footnotes: Sequence[str] = (), meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON form of a table: ``rows`` maps a label to its seeds' metric dicts, ``paper`` a label to the
    paper's numbers (missing labels have none), ``row_keys`` a label to its row (method) key."""
    paper = paper or {}
    out_rows = []
    for label, seeds in rows.items():
        out_rows.append({
            "label": label,
            "key": (row_keys or {}).get(label),
            "n_seeds": len(seeds),
            "metrics": {key: summarize([m.get(key) for m in seeds]) for _, key, _ in columns},
            "paper": {key: paper[label][key] for _, key, _ in columns if key in paper.get(label, {})} or None,
        })
    return {**(meta or {}), "caption": caption,
            "columns": [{"header": h, "key": k, "digits": d} for h, k, d in columns],
            "rows": out_rows, "footnotes": list(footnotes)}


def _cell(stat: dict[str, Any], digits: int) -> str:
    if stat["mean"] is None:
        return "-"
    if stat["std"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_from_data(data: dict[str, Any]) -> str:
    """A Markdown table (caption, one row per model, an italic "paper" sub-row where the paper has numbers,
    numbered footnotes) from :func:`table_data`."""
    cols = data["columns"]
    lines = []
    if data["caption"]:
        lines += [data["caption"], ""]
    lines += ["| Model | " + " | ".join(c["header"] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in data["rows"]:
        cells = [_cell(row["metrics"][c["key"]], c["digits"]) for c in cols]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
        if row["paper"]:
            paper_cells = [f"*{row['paper'][c['key']]:.{c['digits']}f}*" if c["key"] in row["paper"] else ""
                           for c in cols]
            lines.append("| *↳ paper* | " + " | ".join(paper_cells) + " |")
    if data["footnotes"]:
        lines.append("")
        lines += [f"{i}. {note}" for i, note in enumerate(data["footnotes"], 1)]
    return "\n".join(lines) + "\n"


def csv_from_data(data: dict[str, Any]) -> str:
    """CSV: ``Model, Source (ours | paper), Seeds``, then each column's mean and std, in the paper's order."""
    import csv
    import io

    cols = data["columns"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Model", "Source", "Seeds"] + [h for c in cols for h in (c["header"], f"{c['header']} std")])
    for row in data["rows"]:
        cells: list[Any] = []
        for c in cols:
            st = row["metrics"][c["key"]]
            cells += ["" if st["mean"] is None else round(st["mean"], 6),
                      "" if st["std"] is None else round(st["std"], 6)]
        w.writerow([row["label"], "ours", row["n_seeds"], *cells])
        if row["paper"]:
            cells = [x for c in cols for x in (row["paper"].get(c["key"], ""), "")]
            w.writerow([row["label"], "paper", 5, *cells])
    return buf.getvalue()


def write_tables(out_dir: str | Path, rows: dict[str, list[dict[str, Any]]], *, stem: str = "table",
                 columns: list[tuple[str, str, int]] = TABLE_COLUMNS, paper: dict[str, dict[str, float]] | None = None,
                 row_keys: dict[str, str] | None = None, caption: str = "",
                 footnotes: Sequence[str] = (), meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``<stem>.md``, ``<stem>.csv`` and ``<stem>.json`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = table_data(rows, columns=columns, paper=paper, row_keys=row_keys, caption=caption, footnotes=footnotes,
                      meta=meta)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "json": out_dir / f"{stem}.json"}
    write_text(paths["md"], markdown_from_data(data))
    write_text(paths["csv"], csv_from_data(data))
    write_json(paths["json"], data)
    return paths
