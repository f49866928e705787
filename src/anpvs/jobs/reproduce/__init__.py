"""One-command reproduction of the paper's tables: ``anpvs reproduce --table mnist --scale sample --seeds 2``.

A *protocol* says what to train; it is data, not code: a YAML file shipped in ``anpvs/protocols``
(``<table>_<scale>.yaml``) or any file given with ``protocol=``. Schema::

    table: mnist                # mnist | cifar10 | cifar100: the paper table printed beside ours
    scale: cpu                  # free text (paper | cpu), shown in the caption
    description: ...            # one paragraph for the caption
    common: {key: value}        # dotted config keys applied to every run (source and pre-training too)
    source:                     # the black-box source: one AT run with its own seed, shared by all rows
      seed: 1000
      method: at                # optional, default at
      overrides: {key: value}
    pretrain:                   # optional named runs that rows start from with init: pretrain.<name>
      <name>: {seed: 2000, method: at, overrides: {data.name: fashion_mnist, ...}}
    rows:                       # the table's rows in the paper's order; the key is the id --rows uses
      <row>:
        label: ANP-VS           # optional, default: the paper's label or the row id
        method: anp_vs          # optional, default: the row id
        init: standard          # optional: a row of the same seed, or pretrain.<name>
        ablation: false         # optional: ablation rows are listed last, marked "(ablation)"
        sampled_eval: false     # optional: also evaluate with sampled weights + EOT (Bayesian models,
                                # docs/decisions.md item 8), shown as an extra row
        overrides: {key: value}
    run_order: [row, ...]       # optional: the order rows are trained in (priority under a budget); rows it
                                # leaves out follow in table order. Default: the table's order
    notes: [text, ...]          # optional footnotes
    figures: {n_images: 256, eps_factors: [0, 0.25, 0.5, 0.75, 1, 1.25]}   # optional

A config is ``build_config({**common, **overrides, method, seed, out, init, device, data.dir})``:
dataset preset < method preset < protocol < command line. Rows whose method is not registered in
:data:`anpvs.methods.METHODS` are skipped with a logged note and a table footnote.

Layout of the output folder::

    DIR/runs/source/                 the black-box source (checkpoint.pt, log.jsonl, eval.json)
    DIR/runs/pretrain/<name>/        pre-training runs
    DIR/runs/<row>/seed<k>/          checkpoint.pt, log.jsonl, config.yaml, eval_bb.json
    DIR/table.md, table.csv, table.json, DIR/figures/*.png
    DIR/reproduce.json, DIR/protocol.yaml   what was run (read by ``anpvs figures DIR``)

Rerunning the same command skips finished trainings and evaluations and resumes interrupted ones
(training continues from the last finished epoch; an evaluation counts as finished when its record
names the current checkpoint epoch, source, attack and test subset). ``--tables-only`` (``train=False``)
writes the tables from the records so far and nothing else; a run without its checkpoint (a results folder
such as ``docs/results/mnist_full`` keeps only records) counts when its record names that checkpoint and the
protocol's number of epochs, and its ``log.jsonl`` says how far it was trained otherwise.

The package is split by stage: :mod:`.protocol` (read and check a protocol), :mod:`.plan` (the jobs and their
configs), :mod:`.run` (train, evaluate, resume) and :mod:`.tables` (rows, caption, footnotes).
"""

from ...core.config import ConfigError
from .plan import Job, plan
from .protocol import (
    DEFAULT_SCALE,
    SAMPLED_SUFFIX,
    SCALES,
    ProtocolError,
    available_scales,
    load_protocol,
    protocol_path,
)
from .run import PLACES, config_differences, config_drift, reproduce
from .tables import format_summary, table_inputs

__all__ = ["DEFAULT_SCALE", "PLACES", "SAMPLED_SUFFIX", "SCALES", "ConfigError", "Job", "ProtocolError",
           "available_scales", "config_differences", "config_drift", "format_summary", "load_protocol", "plan",
           "protocol_path", "reproduce", "table_inputs"]
