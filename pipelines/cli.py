"""The `signmae` command line: one config schema, any field overridable with `--set`.

Errors a person can fix (a bad config field, a missing file, an unwritable folder) print one line
`signmae: error: ...` and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from signmae_core.config import (
    ConfigError,
    PipelineConfig,
    SynthConfig,
    load_config,
    short_repr,
)
from signmae_core.errors import SignmaeError
from signmae_core.store import StoreError

from .stages import STAGE_NAMES, STAGES


class UsageError(SignmaeError):
    """Wrong use of the command line."""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=None, help="named config under configs/ or a YAML path"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set masks.dilation=2 (repeatable)",
    )


def _config(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config, args.overrides)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {folder}: {exc.strerror}") from None
    probe = folder / ".signmae-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output folder {folder} is not writable: {exc.strerror}") from None


# ---- commands ----------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    base = load_config(args.config, args.overrides).synth.model_dump()
    given = {
        k: getattr(args, k)
        for k in ("classes", "signers", "reps", "frames", "size", "fps", "seed", "test_signers",
                  "unlabeled")
        if getattr(args, k) is not None
    }
    try:
        synth = SynthConfig.model_validate({**base, **given})
    except ValidationError as exc:
        raise ConfigError(_one_line_validation(exc)) from None
    out = Path(args.out)
    _check_writable(out)
    from signmae_core.synth import generate

    started = time.perf_counter()
    summary = generate(out, synth)
    print(
        f"synth: {summary['clips']} clips, {synth.classes} classes, {synth.signers} signers "
        f"-> {out} ({time.perf_counter() - started:.1f} s)"
    )
    return 0


def _one_line_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"--{where.replace('_', '-')}: {message} (got {short_repr(first.get('input'))})"


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_stages

    cfg = _config(args)
    command = "signmae " + shlex.join(getattr(args, "argv", None) or ["run"])
    run_stages(cfg, args.stages or None, datasets=args.dataset or None, force=args.force,
               provenance={"command": command}, verbose=_verbose(args))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .dag import Plan

    plan = Plan.from_config(_config(args))
    rows = [
        row for row in plan.table(verify=args.verify)
        if not args.dataset or row["dataset"] in args.dataset or row["dataset"] == "_train"
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'dataset':<12} {'stage':<12} {'version':<13} {'state':<9} {'ok':>6} {'failed':>6} "
          f"{'bytes':>11}  why")
    for row in rows:
        print(f"{row['dataset']:<12} {row['stage']:<12} {row['version']:<13} {row['state']:<9} "
              f"{_blank(row['ok']):>6} {_blank(row['failed']):>6} {_blank(row['bytes']):>11}  "
              f"{row['why']}")
    return 0


def _blank(value: object) -> str:
    return "-" if value is None else str(value)


def _verbose(args: argparse.Namespace) -> bool:
    """`signmae --verbose COMMAND` or `signmae COMMAND --verbose`."""
    return bool(getattr(args, "verbose", False) or getattr(args, "verbose_global", False))


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    run_demo(args.config, args.overrides, force=args.force, keep_server=args.keep_server,
             verbose=_verbose(args))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from flows.study import run_study

    run_study(args.study, args.arm or None, keep_server=args.keep_server,
              verbose=_verbose(args))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.hashes:
        sections = [name for name in PipelineConfig.model_fields if name != "name"]
        print(json.dumps({s: cfg.section_hash(s) for s in sections}, indent=2))
    else:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    for stage in STAGES:
        state = "ready" if stage.available else "missing"
        needs = ", ".join(stage.needs) or "-"
        print(f"{stage.name:<12} {state:<8} needs {needs:<17} {stage.summary}")
    return 0


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signmae",
        description="SignMAE: segmentation-driven masked video pretraining for sign language.",
    )
    parser.add_argument(
        "-v", "--verbose", dest="verbose_global", action="store_true",
        help="also show the workers' output (TensorFlow Lite, absl, MediaPipe, Ray warnings) "
        "on the console; it always goes to the run's log file",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="generate the synthetic signer dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--classes", type=int, help="number of sign classes")
    p.add_argument("--signers", type=int, help="number of signers")
    p.add_argument("--reps", type=int, help="repetitions per sign and signer")
    p.add_argument("--frames", type=int, help="frames per clip")
    p.add_argument("--size", type=int, help="frame size in pixels (square)")
    p.add_argument("--fps", type=int, help="frame rate")
    p.add_argument("--test-signers", dest="test_signers", type=int, help="held-out signers")
    p.add_argument("--seed", type=int, help="random seed (same seed: same bytes)")
    p.add_argument("--unlabeled", action="store_true", default=None,
                   help="an unlabelled pool: every clip in the pretrain split")
    _add_config_args(p)
    p.set_defaults(func=cmd_synth)

    _add_run_and_demo(sub)

    p = sub.add_parser("config", help="print the resolved config (or its section hashes)")
    p.add_argument("--hashes", action="store_true", help="print each section's canonical hash")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "plan", help="per dataset and stage: version, state (done, will run, stale, damaged)"
    )
    p.add_argument("--dataset", action="append", help="dataset name (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify", action="store_true", help="also check recorded sha256 sums")
    _add_config_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("stages", help="list the stages and which are available")
    p.set_defaults(func=cmd_stages)

    _register_extra_commands(sub)
    return parser


def _add_run_and_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`signmae run`, `signmae demo` and `signmae study`."""
    p = sub.add_parser("run", help="run pipeline stages (all available ones by default)")
    p.add_argument("stages", nargs="*", metavar="STAGE", help=f"one of: {', '.join(STAGE_NAMES)}")
    p.add_argument("--dataset", action="append", help="dataset name (repeatable; default: all)")
    p.add_argument("--force", action="store_true", help="recompute even if up to date")
    p.add_argument("--verbose", action="store_true",
                   help="also show the workers' output on the console (see signmae --verbose)")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo", help="synthesize the default dataset and run every stage on it as a Prefect flow"
    )
    p.add_argument("--force", action="store_true", help="recompute even if up to date")
    p.add_argument(
        "--keep-server", action="store_true",
        help="keep the temporary Prefect server after the run (print its UI; Ctrl-C stops it)",
    )
    p.add_argument("--verbose", action="store_true", help="show Prefect's run logs too")
    _add_config_args(p)
    p.set_defaults(func=cmd_demo, config="cpu_demo")

    p = sub.add_parser(
        "study", help="run a study's arms (each seed a Prefect flow run) and tabulate them"
    )
    p.add_argument("study", metavar="STUDY", help="study file, e.g. configs/study_synth.yaml")
    p.add_argument("--arm", action="append", help="run only this arm (repeatable)")
    p.add_argument(
        "--keep-server", action="store_true",
        help="keep the temporary Prefect server after the study (Ctrl-C stops it)",
    )
    p.add_argument("--verbose", action="store_true", help="show Prefect's run logs too")
    p.set_defaults(func=cmd_study)


def _register_extra_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Commands that live next to their stage (inspect, predict) add themselves here."""
    from . import commands

    for register in commands.REGISTER:
        register(sub, _add_config_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return int(args.func(args) or 0)
    except (ConfigError, StoreError, SignmaeError) as exc:
        print(f"signmae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("signmae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
