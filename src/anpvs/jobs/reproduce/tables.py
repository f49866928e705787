"""The tables of a reproduction: rows over seeds beside the paper's numbers, caption and footnotes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...evaluation.paper_results import PAPER_SETTINGS, paper_notes, paper_table
from ...evaluation.tables import TABLE_COLUMNS, autoattack_columns
from .protocol import SAMPLED_SUFFIX


def table_inputs(proto: dict[str, Any], seeds: list[int], shown: list[str], skipped: dict[str, str],
                 failed: dict[str, str], records: dict[str, dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """Keyword arguments of :func:`anpvs.evaluation.tables.write_tables` for a reproduction: rows (label -> the metrics
    of its seeds), the paper's numbers, row keys, caption, footnotes and metadata."""
    rows: dict[str, list[dict[str, Any]]] = {}
    row_keys: dict[str, str] = {}
    paper_by_key = paper_table(proto["table"])
    paper: dict[str, dict[str, float]] = {}
    footnotes: list[str] = []
    main = [k for k in shown if not proto["rows"][k]["ablation"]]
    ablation = [k for k in shown if proto["rows"][k]["ablation"]]
    warned: dict[str, list[str]] = {}
    for key in main + ablation:
        row = proto["rows"][key]
        label = f"{row['label']} (ablation)" if row["ablation"] else row["label"]
        rows[label] = [records[f"{key}/seed{s}"]["metrics"] for s in seeds if f"{key}/seed{s}" in records]
        row_keys[label] = key
        if key in paper_by_key:
            paper[label] = paper_by_key[key]
        missing = [s for s in seeds if f"{key}/seed{s}" not in records]
        if missing:
            reasons = {failed.get(f"{key}/seed{s}", "not run") for s in missing}
            footnotes.append(f"{label}: seed(s) {', '.join(map(str, missing))} missing ({'; '.join(sorted(reasons))}).")
        sampled = [records[n]["metrics"] for s in seeds if (n := f"{key}{SAMPLED_SUFFIX}/seed{s}") in records]
        if sampled:
            rows[label + SAMPLED_SUFFIX] = sampled
            row_keys[label + SAMPLED_SUFFIX] = key
        # a seed whose row is there but not its sampled-weights evaluation (--tables-only: still to do)
        todo = [s for s in seeds if f"{key}/seed{s}" in records and f"{key}{SAMPLED_SUFFIX}/seed{s}" not in records]
        if row["sampled_eval"] and todo:
            reasons = {failed.get(f"{key}{SAMPLED_SUFFIX}/seed{s}", "not run") for s in todo}
            footnotes.append(f"{label}{SAMPLED_SUFFIX}: seed(s) {', '.join(map(str, todo))} missing "
                             f"({'; '.join(sorted(reasons))}).")
        for s in seeds:
            for name in (f"{key}/seed{s}", f"{key}{SAMPLED_SUFFIX}/seed{s}"):
                for w in (records.get(name) or {}).get("warnings") or []:
                    warned.setdefault(w, []).append(name)
    footnotes += [f"Evaluation check ({', '.join(names)}): {w}" for w, names in warned.items()]
    for key, why in skipped.items():
        footnotes.append(f"{proto['rows'][key]['label']}: row skipped, {why}.")
    for name, why in failed.items():
        if name.startswith(("source", "pretrain.")):
            footnotes.append(f"{name}: {why}.")
    footnotes += notes + proto["notes"] + paper_notes(shown)
    columns = list(TABLE_COLUMNS)
    aa = proto["autoattack"]
    if aa is not None:
        n = aa["test_limit"]
        columns += autoattack_columns(n)
        if aa.get("extra") is not None:
            eps = aa["extra"]["eps"]
            tag = f"{eps * 255:.3g}/255" if abs(eps * 255 - round(eps * 255)) < 1e-3 else f"{eps:g}"
            columns += [(f"AutoAttack acc at eps {tag}, same {n} (%)", "autoattack_acc_extra", 2),
                        (f"PGD-40 acc at eps {tag}, same {n} (%)", "aa_pgd_acc_extra", 2)]
    return {"rows": rows, "paper": paper, "row_keys": row_keys, "caption": _caption(proto, seeds, records),
            "columns": columns,
            "footnotes": footnotes,
            "meta": {"protocol": proto["name"], "table": proto["table"], "scale": proto["scale"], "seeds": seeds}}


def _caption(proto: dict[str, Any], seeds: list[int], records: dict[str, dict[str, Any]]) -> str:
    table = proto["table"]
    rows = [r for name, r in records.items() if name != "source"]
    parts = [f"**{PAPER_SETTINGS[table]}** (the paper's Table 1 setting), reproduced with protocol "
             f"`{proto['name']}` (scale: {proto['scale'] or '-'}), seeds {', '.join(map(str, seeds))} "
             f"(mean ± sample std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}; the paper: mean of 5 runs)."]
    if proto["description"]:
        parts.append(proto["description"])
    if rows:
        r = rows[0]
        a = r["attack"]
        parts.append(f"Model {r['model'].removesuffix('_bbd')}; test set: {r['metrics']['n']} images of {r['dataset']} "
                     f"({r.get('data_source', '?')}).")
        parts.append(f"White-box: PGD-{a['steps']} on the test-mode network, {a['norm']} eps {a['eps']} "
                     f"(pixel units), step {a['step_size']}, random start, {a['restarts']} restart(s). "
                     f"Black-box: the same PGD on the source model, transferred.")
    aa = proto["autoattack"]
    if aa is not None:
        sampled = [proto["rows"][k]["label"] for k in proto["rows"] if proto["rows"][k]["aa_sampled"]]
        parts.append(f"AutoAttack (pyautoattack, standard version: APGD-CE, APGD-T, FAB-T, Square; fp32, on the "
                     f"compacted network for masked models) on one seeded, class-stratified subset of "
                     f"{aa['test_limit']} test images, the same for every row, seed(s) "
                     f"{', '.join(map(str, aa['seeds']))}; PGD-40 on the same subset beside it."
                     + (f" {', '.join(sampled)}: its random-model protocol, i.e. sampled weights, AutoAttack "
                        f"'rand' (APGD-CE and APGD-DLR with EOT over 20 samples) and PGD-40 with EOT-10 on the "
                        f"stochastic network." if sampled else ""))
        if aa.get("extra") is not None:
            labels = [proto["rows"][k]["label"] for k in aa["extra"]["rows"]]
            parts.append(f"AutoAttack and PGD-40 also at eps {aa['extra']['eps']:.5f} (pixel units) for "
                         f"{', '.join(labels)}, on the same subset.")
    src = records.get("source")
    if src is not None:
        sm = src["metrics"]
        parts.append(f"Black-box source: `{Path('runs') / 'source'}` ({src['method']}, seed {src['seed']}, "
                     f"{src.get('epochs')} epochs; clean {sm['clean_acc']:.2f} %, white-box PGD "
                     f"{sm['pgd_acc']:.2f} %), the same for every row and seed.")
    parts.append("V = mean |z(x) - z(x_adv)| over latent features and test images (docs/decisions.md item 2); "
                 "Memory, FLOPs and Sparsity (unit sparsity) are analytic (docs/reference.md §6); "
                 "weight sparsity = share of zero conv/linear weights; Measured speed-up = median wall-clock "
                 "latency of the masked over the physically compacted network at batch 256 on the evaluating "
                 "device (docs/compact.md; - for records without it).")
    return " ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """What ``anpvs reproduce`` prints at the end."""
    lines = [summary["markdown"].rstrip(), "", f"written: {', '.join(summary['tables'].values())}"]
    if summary["figures"]:
        lines.append(f"figures: {len(summary['figures'])} in {Path(summary['out']) / 'figures'}")
    if summary["skipped"]:
        lines.append("skipped rows: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()))
    if summary["failed"]:
        lines.append("did not finish: " + "; ".join(f"{k} ({v})" for k, v in summary["failed"].items()))
    lines.append(f"done in {summary['elapsed_s'] / 60:.1f} min; rerun the same command to resume or refresh")
    return "\n".join(lines)


__all__ = ["format_summary", "table_inputs"]
