"""Command line: ``anpvs train | eval | check | compact | pretrained | demo | reproduce | figures | audit``.

Invalid input ends with a one-line ``anpvs: error: ...`` message and a non-zero exit status (2: a wrong
command, 1: the input or the run failed; 130/143: stopped by SIGINT/SIGTERM; docs/reliability.md).
``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Only the version and the error types at import time: ``anpvs --version`` and ``--help`` load no torch;
# each command imports what it runs.
from ._version import __version__
from .core.errors import AnpvsError, ConfigError, RunInterrupted, StorageError, finite_float, seed_int, storage_error

log = logging.getLogger("anpvs")

#: how the help texts name a pretrained model (anpvs.io.pretrained, imported when a command runs)
PRETRAINED_HELP = "pretrained:NAME (a shipped model, see anpvs pretrained)"

# CLI flag -> config key (the flags mirror the original README's; everything else via --set key=value)
TRAIN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--dataset", "data.name", str, "mnist_sample | mnist | fashion_mnist | cifar10 | cifar100 | imagefolder"),
    ("--data-dir", "data.dir", str, "local data folder (torchvision layout, raw IDX files, or ImageFolder root)"),
    ("--model", "model.name", str, "architecture: lenet5_caffe | vgg16 (methods with masks use the _bbd variant)"),
    ("--method", "method.name", str, "standard | at | at_vs | bp | anp | anp_vs | ..."),
    ("--epochs", "train.epochs", int, "number of epochs"),
    ("--batch-size", "train.batch_size", int, "batch size (paper: 64)"),
    ("--lr", "train.lr", finite_float, "Adam learning rate of the weights"),
    ("--seed", "seed", int, "random seed"),
    ("--out", "out", str, "run directory"),
    ("--init", "init", str, "checkpoint whose weights initialise the model (BP/ANP/ANP-VS: a Standard run)"),
    ("--eps", "attack.eps", finite_float, "training attack radius, pixel units (anpvs eval defaults to it)"),
    ("--step-size", "attack.step_size", finite_float, "training attack step, pixel units"),
    ("--pgd-steps", "attack.steps", int, "training attack iterations"),
    ("--beta", "method.beta", finite_float, "weight of KL/N of the Beta-Bernoulli masks"),
    ("--vs-weight", "method.vs_weight", finite_float, "lambda of the vulnerability suppression loss"),
    ("--val-size", "data.val_size", int, "hold out this many training images for per-epoch validation"),
    ("--train-limit", "data.train_limit", int, "train on a seeded random subset of this size"),
    ("--test-limit", "data.test_limit", int, "evaluate on a seeded random subset of this size"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N | mps"),
]


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (Standard, AT, ANP-VS, ...)",
                       description="Train a model. Defaults: dataclass defaults < dataset preset < --config < flags.")
    p.add_argument("--config", help="YAML config file (nested sections or dotted keys)")
    for flag, key, tp, help_ in TRAIN_FLAGS:
        p.add_argument(flag, dest=key, type=tp, default=None, help=f"{help_} [{key}]")
    p.add_argument("--download", dest="data.download", action="store_const", const=True, default=None,
                   help="download the dataset with torchvision when it is not found locally")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr_milestones=[0.5,0.8] (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true",
                   help="train into an --out folder that holds files of something other than an anpvs run")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: accuracy, robustness, vulnerability, efficiency")
    p.add_argument("checkpoint", help=f"checkpoint.pt of a run, or {PRETRAINED_HELP}")
    p.add_argument("--attack", action="append", default=None, metavar="NAME",
                   help="a registered attack to run: pgd | fgsm | autoattack (repeatable; default: pgd; autoattack "
                        "needs pip install 'anpvs[eval]' and runs beside pgd)")
    p.add_argument("--eps", type=finite_float,
                   help="attack radius in pixel units (default: the radius the model was trained for, attack.eps)")
    p.add_argument("--step-size", type=finite_float, help="PGD step in pixel units (default: eval.step_size)")
    p.add_argument("--steps", type=int, help="PGD iterations (default: eval.steps, 40)")
    p.add_argument("--restarts", type=int, help="PGD restarts, worst case kept (default: 1)")
    p.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the training attack's norm)")
    p.add_argument("--attack-source", metavar="CKPT",
                   help="black-box: transfer the attack from this (adversarially trained) source model (a "
                        "checkpoint.pt or pretrained:NAME)")
    p.add_argument("--dataset", metavar="NAME",
                   help="evaluate on this dataset's test split instead of the run's, e.g. mnist_test_sample (2,000 "
                        "real MNIST test digits bundled with anpvs, offline); its images and classes must be the "
                        "model's; record: eval_NAME.json")
    p.add_argument("--data-dir", help="where the test data lives (default: the run's data.dir; with --dataset: "
                                      "the default data folder)")
    p.add_argument("--test-limit", type=int, help="evaluate on a seeded subset of this size (default: all)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the attacks' random starts")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--eot", type=int, help="PGD/FGSM average gradients over N stochastic forwards "
                                           "(default: 1, or 10 with --sample-weights)")
    p.add_argument("--sample-weights", action="store_true",
                   help="Bayesian models (*_bnn): sample weights at test time; predict with an ensemble, "
                        "attack with EOT")
    p.add_argument("--ensemble", type=int, help="with --sample-weights: average the softmax of K sampled forwards "
                                                "(default: 10)")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="compute the adversarial examples under bf16 autocast (default: eval.precision, fp32)")
    p.add_argument("--out", help="JSON record path (default: eval.json next to the checkpoint; "
                                 "runs/pretrained/NAME/ for pretrained:NAME)")
    p.add_argument("--no-latency", dest="latency", action="store_false", default=None,
                   help="skip the wall-clock latency of the masked vs compacted network (default: the run's "
                        "eval.latency, on)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_compact_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compact", help="save the physically compacted network of a checkpoint (pruned units "
                                       "removed) as a checkpoint, or export it to TorchScript / ONNX",
                       description="Compact a LeNet5-Caffe or VGG-16 checkpoint. The compacted checkpoint "
                                   "evaluates like its source (anpvs eval / check / --attack-source); the "
                                   "exported files take [0, 1] images and return logits.")
    p.add_argument("checkpoint", help=f"checkpoint.pt of a run (or a compacted checkpoint, with --export), or "
                                      f"{PRETRAINED_HELP}")
    p.add_argument("--export", choices=["torchscript", "onnx"],
                   help="write a TorchScript or ONNX file instead (onnx needs pip install 'anpvs[onnx]')")
    p.add_argument("--out", help="output file (default: beside the checkpoint, e.g. checkpoint.compact.pt, "
                                 ".compact.ts, .compact.onnx; runs/pretrained/NAME/ for pretrained:NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (the default output beside "
                                                        "the checkpoint is always replaced)")


def _add_check_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="sanity checks of the evaluation: stochastic forward, probabilities, zero "
                                     "gradients, eps sweep (docs/checks.md)")
    p.add_argument("checkpoint", help=f"checkpoint.pt of a run, or {PRETRAINED_HELP}")
    p.add_argument("--test-limit", type=int, default=1000, help="test images of the eps sweep (default: 1000)")
    p.add_argument("--eps-sweep", type=lambda t: [finite_float(v) for v in t.split(",")], metavar="E1,E2,...",
                   help="radii of the sweep (default: 0, 1/3, 2/3, 1, 5/3 x the training attack.eps and 1.0 for linf)")
    p.add_argument("--steps", type=int, help="PGD iterations (default: eval.steps)")
    p.add_argument("--eot", type=int, help="PGD averages gradients over N forwards (default: 1, 10 with "
                                           "--sample-weights)")
    p.add_argument("--sample-weights", action="store_true", help="Bayesian models: sample weights at test time")
    p.add_argument("--ensemble", type=int, help="with --sample-weights: predictions average K sampled forwards")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a check fires")
    p.add_argument("--dataset", metavar="NAME",
                   help="check on this dataset's test split instead of the run's, e.g. mnist_test_sample (2,000 "
                        "real MNIST test digits bundled with anpvs, offline); record: check_NAME.json")
    p.add_argument("--data-dir", help="where the test data lives (default: the run's data.dir; with --dataset: "
                                      "the default data folder)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the attacks' random starts")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--out", help="JSON record path (default: check.json next to the checkpoint; "
                                 "runs/pretrained/NAME/ for pretrained:NAME)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_pretrained_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("pretrained", help="list the pretrained models shipped with anpvs and their metrics",
                   description="List the pretrained models of the registry (the package's, or the folder "
                               "$ANPVS_PRETRAINED_DIR) with the metrics of their evaluation records; use one as "
                               "pretrained:NAME wherever a checkpoint is taken.")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: the pretrained MNIST AT and ANP-VS models on bundled real "
                                    "MNIST test digits (when installed), then a smoke test that trains Standard and "
                                    "ANP-VS on bundled digits and compacts it (offline, minutes on a CPU)")
    p.add_argument("--out", default="runs/demo", help="folder for the runs, records and the tables")
    p.add_argument("--epochs-scale", type=finite_float, default=1.0,
                   help="multiply every epoch budget of the smoke test (e.g. 0.2 for a quicker run)")
    p.add_argument("--skip-training", action="store_true",
                   help="only part 1: evaluate the pretrained models, train nothing")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_reproduce_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="train and evaluate every row of one of the paper's tables over seeds; "
                                         "write the table (md/csv/json) and the figures (resumable)")
    p.add_argument("--table", choices=["mnist", "cifar10", "cifar100"], help="which table (picks the protocol)")
    p.add_argument("--scale", choices=["paper", "full", "sample", "cpu"], default=None,
                   help="paper: the paper's 200-epoch protocol (GPU); MNIST: full (all 60,000/10,000 digits, "
                        "a CPU budget; needs --data-dir) or sample (the 4,000 bundled digits, default); "
                        "CIFAR: cpu (default)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of every row (the paper: 5)")
    p.add_argument("--out", default="runs/reproduce", help="output folder (runs/, table.*, figures/)")
    p.add_argument("--rows", type=lambda t: [r.strip() for r in t.split(",") if r.strip()], metavar="A,B,...",
                   help="only these rows (e.g. standard,at,anp_vs); their dependencies still train")
    p.add_argument("--protocol", metavar="FILE", help="a protocol YAML replacing the shipped one")
    p.add_argument("--data-dir", help="local data folder of the table's dataset (MNIST IDX files, CIFAR batches)")
    p.add_argument("--pretrain-data-dir", help="local data folder of the pre-training runs (e.g. Fashion-MNIST)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--tables-only", action="store_true",
                   help="train and evaluate nothing: write the tables from the finished runs so far (no figures)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_figures_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="(re)draw the figures of an anpvs reproduce folder without retraining")
    p.add_argument("dir", help="the --out folder of anpvs reproduce")
    p.add_argument("--n-images", type=int, help="test images used by the figures (default: the protocol's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")


def _add_audit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="trust checks of every model of an anpvs reproduce folder: black-box >= "
                                     "white-box, eps sweep to ~0%%, AutoAttack <= PGD-40 (resumable)")
    p.add_argument("dir", help="the --out folder of anpvs reproduce")
    p.add_argument("--test-limit", type=int, default=1000, help="test images of the eps sweep (default: 1000)")
    p.add_argument("--aa-limit", type=int, help="test images of AutoAttack and its PGD-40 (default: --test-limit)")
    p.add_argument("--seeds", type=lambda t: [int(s) for s in t.split(",") if s.strip()], metavar="S1,S2,...",
                   help="only the runs of these seeds (default: all; the source is always audited)")
    p.add_argument("--no-autoattack", action="store_true", help="skip AutoAttack (needs anpvs[eval])")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a check fails")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``anpvs: error: ...``, status 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"anpvs: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="anpvs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"anpvs {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_check_parser(sub)
    _add_compact_parser(sub)
    _add_pretrained_parser(sub)
    _add_demo_parser(sub)
    _add_reproduce_parser(sub)
    _add_figures_parser(sub)
    _add_audit_parser(sub)
    return parser


def _train_config(args: argparse.Namespace):
    from .core.config import load_yaml, parse_override

    # the YAML first (bounded: size, depth, no aliases, no duplicate keys), before the resolution below imports
    # torch with the registries: a hostile file is refused in a fraction of a second
    base = load_yaml(args.config) if args.config else {}
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    for _, key, _, _ in TRAIN_FLAGS:
        if "." not in key and getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    for text in args.overrides:
        k, v = parse_override(text)
        overrides[k] = v
    from .training.run_config import build_config

    return build_config(overrides, base=base)


def cmd_train(args: argparse.Namespace) -> int:
    import yaml

    cfg = _train_config(args)  # before any data or model is touched: a bad config costs no training
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from .core import distributed
    from .training.loop import fit

    try:
        summary = fit(cfg, resume=args.resume, progress=not args.quiet, force=args.force)
        if distributed.current().is_main:
            print(f"trained {cfg.method.name} for {summary['epoch']} epochs; checkpoint: {summary['checkpoint']}")
    finally:
        distributed.teardown()
    return 0


@contextlib.contextmanager
def _keep_result() -> Iterator[None]:
    """A record computed but not written (full disk, quota, read-only file system) goes to standard output."""
    try:
        yield
    except StorageError as e:
        if e.result is None:
            raise
        import json

        print(json.dumps(e.result, indent=2))
        raise StorageError(f"{e.problem}; the command finished and its record is printed on standard output",
                           e.action, then="save it from there (or rerun the command)") from e


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.checks import AnpvsEvaluationWarning
    from .jobs.evaluate import evaluate_checkpoint, format_eval

    with warnings.catch_warnings(), _keep_result():
        warnings.simplefilter("ignore", AnpvsEvaluationWarning)  # format_eval prints them
        record = evaluate_checkpoint(
            args.checkpoint, attacks=args.attack or ["pgd"], eps=args.eps, step_size=args.step_size,
            steps=args.steps, restarts=args.restarts, norm=args.norm, source=args.attack_source,
            data_dir=args.data_dir, test_limit=args.test_limit, batch_size=args.batch_size, seed=args.seed,
            device=args.device, out=args.out, progress=not args.quiet, eot=args.eot,
            sample_weights=args.sample_weights, ensemble=args.ensemble, precision=args.precision,
            latency=args.latency, dataset=args.dataset)
    from .core import distributed

    if distributed.current().is_main:
        print(format_eval(record))
    distributed.teardown()
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from .jobs.compact import compact_checkpoint, format_compact

    print(format_compact(compact_checkpoint(args.checkpoint, out=args.out, export=args.export, force=args.force)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .evaluation.checks import AnpvsEvaluationWarning
    from .jobs.check import check_checkpoint, format_check

    with warnings.catch_warnings(), _keep_result():
        warnings.simplefilter("ignore", AnpvsEvaluationWarning)  # format_check prints them
        record = check_checkpoint(
            args.checkpoint, eps_values=args.eps_sweep, steps=args.steps, test_limit=args.test_limit,
            sample_weights=args.sample_weights, eot=args.eot, ensemble=args.ensemble, data_dir=args.data_dir,
            dataset=args.dataset, batch_size=args.batch_size, seed=args.seed, device=args.device, out=args.out,
            progress=not args.quiet)
    print(format_check(record))
    return 1 if args.strict and record["warnings"] else 0


def cmd_pretrained(args: argparse.Namespace) -> int:
    from .io.pretrained import format_table, read_manifest

    print(format_table(read_manifest()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .jobs.demo import run_demo

    print(run_demo(args.out, epochs_scale=args.epochs_scale, device=args.device, progress=not args.quiet,
                   training=not args.skip_training))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    if args.table is None and args.protocol is None:
        raise ConfigError("give --table mnist|cifar10|cifar100 (or --protocol FILE)")
    if args.protocol is not None:  # the bounded YAML reader before torch: a hostile file costs no second
        from .io.yamlfile import read_protocol_file

        read_protocol_file(args.protocol, ConfigError)
    from .jobs.reproduce import format_summary, reproduce
    try:
        summary = reproduce(args.table, seeds=args.seeds, scale=args.scale, out=args.out, rows=args.rows,
                            protocol=args.protocol, device=args.device, data_dir=args.data_dir,
                            pretrain_data_dir=args.pretrain_data_dir, figures=not args.no_figures,
                            progress=not args.quiet, train=not args.tables_only)
    except KeyboardInterrupt as e:  # Ctrl-C or RunInterrupted (SIGINT/SIGTERM)
        how = f"stopped by {e.signame}" if isinstance(e, RunInterrupted) else "interrupted"
        print(f"anpvs: error: {how}; rerun the same command to resume (finished runs and evaluations are kept)",
              file=sys.stderr)
        return e.exit_code if isinstance(e, RunInterrupted) else 130
    print(format_summary(summary))
    return 1 if summary["failed"] else 0


def cmd_figures(args: argparse.Namespace) -> int:
    from .jobs.figures import draw_figures

    paths = draw_figures(args.dir, device=args.device, n_images=args.n_images)
    print("\n".join(str(p) for p in paths))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .evaluation.checks import AnpvsEvaluationWarning
    from .jobs.audit import audit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnpvsEvaluationWarning)  # audit.md lists them
        summary = audit(args.dir, test_limit=args.test_limit, aa_limit=args.aa_limit, seeds=args.seeds,
                        autoattack=not args.no_autoattack, device=args.device, progress=not args.quiet)
    print((Path(summary["out"]) / "audit.md").read_text(), end="")
    return 1 if args.strict and not summary["passed"] else 0


def main(argv: list[str] | None = None) -> int:
    from .core.signals import graceful_signals

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    commands = {"train": cmd_train, "eval": cmd_eval, "check": cmd_check, "compact": cmd_compact,
                "pretrained": cmd_pretrained, "demo": cmd_demo, "reproduce": cmd_reproduce, "figures": cmd_figures,
                "audit": cmd_audit}

    def fail(status: int, message: str) -> None:
        if args.verbose:
            log.exception("anpvs %s failed", args.command)
        parser.exit(status, f"anpvs: error: {' '.join(str(message).split()) or 'failed'}\n")

    try:
        with graceful_signals():
            return commands[args.command](args)
    except AnpvsError as e:
        fail(e.exit_code, str(e))
    except RunInterrupted as e:
        fail(e.exit_code, str(e))
    except KeyboardInterrupt:
        fail(130, "interrupted; rerun with --resume to continue from the last finished epoch")
    except OSError as e:  # a file or folder the checks above could not foresee (full disk, permissions)
        disk = storage_error(e, e.filename) if getattr(e, "filename", None) else None
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        fail(1, str(disk) if disk else f"{e.strerror or type(e).__name__}{where}; check the path and its permissions")
    except Exception as e:  # a bug: one line by default, the traceback with -v
        fail(1, f"internal error {type(e).__name__}: {e}; rerun with -v for the traceback and report it")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
