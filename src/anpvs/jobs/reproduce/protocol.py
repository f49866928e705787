"""Protocols of ``anpvs reproduce``: what to train, as data (the schema is in :mod:`anpvs.jobs.reproduce`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ...core.config import ConfigError, flatten
from ...core.errors import short
from ...evaluation.paper_results import TABLES, paper_labels
from ...io.yamlfile import read_protocol_file

#: shipped protocol scales (not every table has every scale: :func:`available_scales`)
SCALES = ("paper", "full", "sample", "cpu")
#: the scale ``anpvs reproduce --table T`` runs without ``--scale``: the quick protocol of each table
DEFAULT_SCALE = {"mnist": "sample", "cifar10": "cpu", "cifar100": "cpu"}
_TOP_KEYS = {"table", "scale", "description", "common", "source", "pretrain", "rows", "notes", "figures",
             "autoattack", "run_order"}
_ROW_KEYS = {"label", "method", "init", "ablation", "sampled_eval", "aa_sampled", "overrides"}
_AA_KEYS = {"test_limit", "seeds", "extra"}
_AA_EXTRA_KEYS = {"eps", "rows"}
SAMPLED_SUFFIX = " (sampled weights, EOT)"
_RUN_KEYS = {"seed", "method", "overrides", "init"}


class ProtocolError(ConfigError):
    """A protocol file that cannot be used (one-line message; the CLI exits with status 2)."""


def _names(keys: Any) -> str:
    """Keys of a hostile file, for a message: a few, each cut short (they may be any YAML scalar)."""
    shown = sorted((k if isinstance(k, str) else short(k))[:40] for k in keys)
    return ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else "")


# --------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------


def available_scales(table: str) -> list[str]:
    """The scales shipped for ``table``, in the order of :data:`SCALES`."""
    folder = resources.files("anpvs") / "protocols"
    return [s for s in SCALES if (folder / f"{table}_{s}.yaml").is_file()]


def protocol_path(table: str, scale: str | None = None) -> Path:
    """The shipped protocol file of ``table`` at ``scale`` (default: :data:`DEFAULT_SCALE`)."""
    if table not in TABLES:
        raise ProtocolError(f"unknown table {table!r}; valid: {', '.join(TABLES)}")
    scale = DEFAULT_SCALE[table] if scale is None else scale
    valid = available_scales(table)
    if scale not in valid:
        hint = ("; the 4,000-digit MNIST protocol is now --scale sample, the full-data one --scale full"
                if table == "mnist" and scale == "cpu" else "")
        raise ProtocolError(f"no {scale!r} protocol for table {table}; valid: {', '.join(valid)}{hint}")
    return Path(str(resources.files("anpvs") / "protocols" / f"{table}_{scale}.yaml"))


def _autoattack_entry(value: Any) -> dict[str, Any] | None:
    """The protocol's ``autoattack`` block: ``{test_limit: N, seeds: [0]}`` (None: no AutoAttack column)."""
    if value is None:
        return None
    entry = _mapping(value, "autoattack")
    unknown = set(entry) - _AA_KEYS
    if unknown:
        raise ProtocolError(f"autoattack: unknown key(s) {_names(unknown)}; "
                            f"valid: {', '.join(sorted(_AA_KEYS))}")
    n, seeds = entry.get("test_limit"), entry.get("seeds", [0])
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ProtocolError(f"autoattack.test_limit must be an integer >= 1 (got {short(n)})")
    if not (isinstance(seeds, list) and seeds and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in seeds)):
        raise ProtocolError(f"autoattack.seeds must be a non-empty list of seeds >= 0 (got {short(seeds)})")
    extra = _mapping(entry.get("extra"), "autoattack.extra")
    if extra:
        unknown = set(extra) - _AA_EXTRA_KEYS
        if unknown:
            raise ProtocolError(f"autoattack.extra: unknown key(s) {_names(unknown)}; "
                                f"valid: {', '.join(sorted(_AA_EXTRA_KEYS))}")
        eps, rows = extra.get("eps"), extra.get("rows")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
            raise ProtocolError(f"autoattack.extra.eps must be a radius in (0, 1] in pixel units (got {short(eps)})")
        if not (isinstance(rows, list) and rows and all(isinstance(r, str) for r in rows)):
            raise ProtocolError("autoattack.extra.rows must be a non-empty list of row ids")
        extra = {"eps": float(eps), "rows": list(rows)}
    return {"test_limit": n, "seeds": sorted(set(seeds)), **({"extra": extra} if extra else {})}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _run_entry(value: Any, where: str, default_method: str | None) -> dict[str, Any]:
    entry = _mapping(value, where)
    unknown = set(entry) - _RUN_KEYS
    if unknown:
        raise ProtocolError(f"{where}: unknown key(s) {_names(unknown)}; "
                            f"valid: {', '.join(sorted(_RUN_KEYS))}")
    if not isinstance(entry.get("seed"), int):
        raise ProtocolError(f"{where}.seed must be an integer (the run's own seed)")
    overrides = flatten(_mapping(entry.get("overrides"), f"{where}.overrides"))
    method = entry.get("method") or overrides.pop("method.name", None) or default_method
    if not method:
        raise ProtocolError(f"{where} needs a method")
    init = entry.get("init")
    if init is not None and not (isinstance(init, str) and init.startswith("pretrain.")):
        raise ProtocolError(f"{where}.init must be pretrain.<name> (a pre-training run of the protocol)")
    return {"seed": entry["seed"], "method": str(method), "overrides": overrides, "init": init}


def load_protocol(path: str | Path) -> dict[str, Any]:
    """Read and check a protocol file; returns it normalised (overrides flattened to dotted keys)."""
    path = Path(path)
    raw = read_protocol_file(path, ProtocolError) or {}
    raw = _mapping(raw, f"protocol {path.name}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ProtocolError(f"protocol {path.name}: unknown key(s) {_names(unknown)}; "
                            f"valid: {', '.join(sorted(_TOP_KEYS))}")
    table = raw.get("table")
    if not isinstance(table, str) or table not in TABLES:
        raise ProtocolError(f"protocol {path.name}: table must be one of {', '.join(TABLES)} (got {short(table)})")
    if "source" not in raw:
        raise ProtocolError(f"protocol {path.name} needs a source entry (the black-box AT source run)")
    pretrain = {name: _run_entry(v, f"pretrain.{name}", None)
                for name, v in _mapping(raw.get("pretrain"), "pretrain").items()}
    labels = paper_labels()
    rows: dict[str, dict[str, Any]] = {}
    for key, value in _mapping(raw.get("rows"), "rows").items():
        entry = _mapping(value, f"rows.{key}")
        unknown = set(entry) - _ROW_KEYS
        if unknown:
            raise ProtocolError(f"rows.{short(key, 40)}: unknown key(s) {_names(unknown)}; "
                                f"valid: {', '.join(sorted(_ROW_KEYS))}")
        overrides = flatten(_mapping(entry.get("overrides"), f"rows.{key}.overrides"))
        rows[key] = {"label": str(entry.get("label") or labels.get(key, key)),
                     "method": str(entry.get("method") or overrides.pop("method.name", None) or key),
                     "init": entry.get("init"), "ablation": bool(entry.get("ablation", False)),
                     "sampled_eval": bool(entry.get("sampled_eval", False)),
                     "aa_sampled": bool(entry.get("aa_sampled", False)), "overrides": overrides}
        overrides.pop("method.name", None)
    if not rows:
        raise ProtocolError(f"protocol {path.name} has no rows")
    for key, row in rows.items():
        init = row["init"]
        if init is None:
            continue
        if not isinstance(init, str):
            raise ProtocolError(f"rows.{key}.init must be a row id or pretrain.<name>")
        if init.startswith("pretrain."):
            if init.removeprefix("pretrain.") not in pretrain:
                raise ProtocolError(f"rows.{key}.init: no pre-training run {short(init)}; defined: "
                                    f"{', '.join('pretrain.' + n for n in pretrain) or 'none'}")
        elif init not in rows or init == key:
            raise ProtocolError(f"rows.{key}.init: {short(init)} is not another row of the protocol")
    _check_acyclic(rows)
    source = _run_entry(raw["source"], "source", "at")
    if source["init"] is not None and source["init"].removeprefix("pretrain.") not in pretrain:
        raise ProtocolError(f"source.init: no pre-training run {source['init']!r}; defined: "
                            f"{', '.join('pretrain.' + n for n in pretrain) or 'none'}")
    if any(p["init"] is not None for p in pretrain.values()):
        raise ProtocolError("pre-training runs cannot have an init (they start from scratch)")
    run_order = raw.get("run_order")
    if run_order is None:
        run_order = list(rows)
    if not (isinstance(run_order, list) and all(isinstance(k, str) for k in run_order)):
        raise ProtocolError("run_order must be a list of row ids")
    unknown = [k for k in run_order if k not in rows]
    if unknown or len(set(run_order)) != len(run_order):
        raise ProtocolError(f"run_order: {', '.join(unknown) or 'a row listed twice'} (rows: {', '.join(rows)})")
    run_order += [k for k in rows if k not in run_order]  # rows it leaves out run last, in table order
    autoattack = _autoattack_entry(raw.get("autoattack"))
    if autoattack is not None and autoattack.get("extra") is not None:
        unknown = [k for k in autoattack["extra"]["rows"] if k not in rows]
        if unknown:
            raise ProtocolError(f"autoattack.extra.rows: {', '.join(unknown)} not rows of the protocol")
    notes = raw.get("notes") or []
    if not isinstance(notes, list):
        raise ProtocolError("notes must be a list of strings")
    return {
        "name": path.name, "path": str(path), "table": table, "scale": str(raw.get("scale", "")),
        "description": str(raw.get("description", "")).strip(),
        "common": flatten(_mapping(raw.get("common"), "common")),
        "source": source,
        "pretrain": pretrain, "rows": rows, "run_order": run_order, "notes": [str(n) for n in notes],
        "figures": _mapping(raw.get("figures"), "figures"),
        "autoattack": autoattack,
    }


def _check_acyclic(rows: dict[str, dict[str, Any]]) -> None:
    for start in rows:
        seen, key = {start}, rows[start]["init"]
        while key in rows:
            if key in seen:
                raise ProtocolError(f"rows.{start}.init: the init chain is circular")
            seen.add(key)
            key = rows[key]["init"]


__all__ = ["DEFAULT_SCALE", "SAMPLED_SUFFIX", "SCALES", "ProtocolError", "available_scales", "load_protocol",
           "protocol_path"]
