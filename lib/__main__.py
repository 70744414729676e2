"""Command line: ``python -m lib run|footprint|sweep|nonspeech|chapter|table|diagnose|sensitivity|cost|build-model``.

Examples::

    python -m lib run --model embedded:whisper-base --split test-other --limit 20
    python -m lib run --library hqq --scheme weight_only --weights int4 --group-size 64
    python -m lib footprint --library torch_ao --scheme dynamic --weights int8 --activations int8
    python -m lib sweep experiments/bitwidth.yml --only hqq --force
    python -m lib sweep experiments/scheme.yml --cluster auto --limit 4
    python -m lib chapter bitwidth -p limit 5 -p run_missing true
    python -m lib diagnose static-activations
    python -m lib nonspeech --only ct2 --commit
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .checks import check_run
from .config import NOISE_KINDS, ConfigError, NoiseSpec, QuantSpec, RunConfig


def _option(text: str) -> tuple[str, object]:
    """``threshold=6.0`` -> ``('threshold', 6.0)``; values parse as JSON when they can."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"option {text!r} must look like key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _quant_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization (omit for the fp32 baseline)")
    g.add_argument("--library", default="none", help="none, torch_ao, torchao, quanto, hqq, bnb")
    g.add_argument("--scheme", default=None, help="dynamic, static, weight_only")
    g.add_argument("--weights", default=None, help="e.g. int8, int4, nf4, float16")
    g.add_argument("--activations", default="none")
    g.add_argument("--granularity", default=None, help="per_tensor, per_channel, per_group")
    g.add_argument("--group-size", type=int, default=None)
    g.add_argument("--scope", default="all", help="all, encoder, decoder")
    g.add_argument("--proj-out", action="store_true", help="untie and quantize the output projection")
    g.add_argument("--calibration", type=int, default=0, help="calibration utterances (static only)")
    g.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE")


def _spec(a) -> QuantSpec:
    if a.library == "none":
        return QuantSpec()
    return QuantSpec(library=a.library, scheme=a.scheme or "weight_only", weights=a.weights or "int8",
                     activations=a.activations, granularity=a.granularity, group_size=a.group_size,
                     scope=a.scope, proj_out=a.proj_out, calibration=a.calibration, options=tuple(a.option))


LOG_FORMAT = "[%(asctime)s] %(message)s"  # e.g. "[23:41:07] start whisper-base__hqq-wo-int4-g64__..."


def log_to_stdout(level: int = logging.INFO) -> None:
    """Show ``lib``'s log records (one logger per module, all under ``lib``) on stdout with a timestamp,
    so ``nohup ... > logs/sweep.log`` keeps them; other libraries' loggers are left as they are."""
    root = logging.getLogger("lib")
    for old in [h for h in root.handlers if getattr(h, "_lib_cli", False)]:  # one handler, on today's stdout
        root.removeHandler(old)
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S")
    info = logging.StreamHandler(sys.stdout)  # progress: below WARNING
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings = logging.StreamHandler(sys.stderr)  # warnings stay out of `table > file.md`
    warnings.setLevel(logging.WARNING)
    for handler in (info, warnings):
        handler.setFormatter(formatter)
        handler._lib_cli = True
        root.addHandler(handler)
    root.setLevel(level)


def absolute_inputs(a: argparse.Namespace) -> None:
    """Resolve the paths a command line names once, against the folder it was typed in, so every executor
    (in-process, papermill kernel in the repository root, Ray worker) reads the same files:
    ``--data``, ``--results`` and ``$LIBRISPEECH_DIR``. ``--allow-unlisted`` becomes the environment flag
    that :func:`lib.data.unlisted_allowed` reads."""
    import os
    from pathlib import Path

    for name in ("data", "results"):
        value = getattr(a, name, None)
        if value and value != "hub":
            setattr(a, name, str(Path(value).expanduser().absolute()))
    if os.environ.get("LIBRISPEECH_DIR"):
        os.environ["LIBRISPEECH_DIR"] = str(Path(os.environ["LIBRISPEECH_DIR"]).expanduser().absolute())
    if getattr(a, "allow_unlisted", False):
        from .data import ALLOW_UNLISTED_ENV

        os.environ[ALLOW_UNLISTED_ENV] = "1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate one configuration (WER, speed, size)")
    run.add_argument("--model", default="embedded:whisper-base")
    run.add_argument("--split", action="append", help="test-clean, test-other, dev-clean (repeatable)")
    run.add_argument("--limit", type=int, default=None)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--data", default=None, help="LibriSpeech dir (default $LIBRISPEECH_DIR) or 'hub'")
    run.add_argument("--results", default=None, help="results folder (default results/)")
    run.add_argument("--force", action="store_true", help="re-run even if the result exists")
    run.add_argument("--allow-unlisted", action="store_true",
                     help="decode utterances missing from MANIFEST.tsv (the result records it)")
    run.add_argument("--noise", default=None, choices=NOISE_KINDS, help="mix this noise into the audio (with --snr)")
    run.add_argument("--snr", type=float, default=None, help="with --noise: active-speech SNR in dB")
    run.add_argument("--noise-seed", type=int, default=0, help="with --noise: seed of the noise audio")
    _quant_args(run)

    fp = sub.add_parser("footprint", help="size and forced-length latency on the whisper-small architecture")
    fp.add_argument("--model", default="footprint:whisper-small")
    fp.add_argument("--repeats", type=int, default=3)
    fp.add_argument("--threads", type=int, default=2)
    fp.add_argument("--results", default=None)
    fp.add_argument("--force", action="store_true")
    _quant_args(fp)

    sw = sub.add_parser("sweep", help="run every configuration of YAML grids (skips finished slugs)")
    sw.add_argument("grids", nargs="+")
    sw.add_argument("--only", default=None, help="substring a slug must contain")
    sw.add_argument("--force", action="store_true")
    sw.add_argument("--retry-failed", action="store_true")
    sw.add_argument("--refresh-outdated", action="store_true",
                    help="after the pending slugs, re-run results decoded with an older decoding recipe")
    sw.add_argument("--no-notebooks", action="store_true", help="call lib directly instead of papermill")
    sw.add_argument("--dry-run", action="store_true", help="list the slugs and whether they are done")
    sw.add_argument("--reverse", action="store_true", help="run the jobs in reverse order (a second sweep)")
    sw.add_argument("--fidelity-only", action="store_true",
                    help="only the teacher-forced fidelity pass, for every configuration with a WER result")
    sw.add_argument("--first", action="append", default=[], metavar="SUBSTR", help="run matching slugs first")
    sw.add_argument("--last", action="append", default=[], metavar="SUBSTR", help="run matching slugs last")
    sw.add_argument("--pause-file", default=None, metavar="PATH",
                    help="while this file exists, wait before starting the next configuration")
    sw.add_argument("--model", default=None, help="override the grids' model, e.g. openai/whisper-small")
    sw.add_argument("--limit", type=int, default=None, help="first N utterances of each split")
    sw.add_argument("--data", default=None, help="LibriSpeech dir (default $LIBRISPEECH_DIR) or 'hub'")
    sw.add_argument("--allow-unlisted", action="store_true",
                    help="decode utterances missing from MANIFEST.tsv (the result records it)")
    sw.add_argument("--cluster", default=None, metavar="ADDRESS",
                    help="decode on Ray: 'auto' (ray.init(): $RAY_ADDRESS, else a local cluster) or "
                         "ray://HOST:PORT; WER only (footprint timing stays single-machine)")
    sw.add_argument("--threads-per-task", type=int, default=None, metavar="N",
                    help="with --cluster: torch threads per task (Ray reserves N CPUs for it)")
    sw.add_argument("--batches-per-shard", type=int, default=8, metavar="K",
                    help="with --cluster: a task decodes K consecutive batches of one configuration")
    sw.add_argument("--no-footprint", action="store_true",
                    help="WER (and fidelity) only: time the whisper-small footprints later, on a quiet machine")
    sw.add_argument("--commit", action="store_true",
                    help="git-commit results/ and book/runs/ after each configuration (only those paths), "
                         "and a running configuration's finished batches (results/.partial) every 10 min")

    ns = sub.add_parser("nonspeech", help="decode synthetic non-speech and one-word clips with each configuration "
                                          "of a grid (results/nonspeech; skips finished slugs)")
    ns.add_argument("grid", nargs="?", default="nonspeech", help="grid name or path (default: nonspeech)")
    ns.add_argument("--only", default=None, help="substring a slug must contain")
    ns.add_argument("--force", action="store_true")
    ns.add_argument("--retry-failed", action="store_true")
    ns.add_argument("--data", default=None, help="LibriSpeech dir (default $LIBRISPEECH_DIR): the babble and "
                                                 "one-word sources (dev-clean + jfk.flac)")
    ns.add_argument("--commit", action="store_true", help="git-commit results/nonspeech after each configuration")

    ch = sub.add_parser("chapter", help="re-execute a chapter notebook into book/ (then jupyter-book build book/)")
    ch.add_argument("names", nargs="+", help="chapter names (notebooks/<name>.md), or 'all'")
    ch.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill parameter, e.g. -p limit 5 -p run_missing true (values parse as YAML)")

    tb = sub.add_parser("table", help="print every configuration of the study: size, compression, WER, latency")
    tb.add_argument("--limit", type=int, default=None, help="the results of runs made with this utterance limit")
    tb.add_argument("--status", default=None, choices=("ok", "failed", "pending"), help="only rows with this status")

    dg = sub.add_parser("diagnose", help="ablations that explain a result (cached in results/diagnostics)")
    dg.add_argument("name", choices=("static-activations",),
                    help="static-activations: which activations break torch.ao static int8")
    dg.add_argument("--calibration", type=int, default=4, help="calibration utterances (also the scored ones)")
    dg.add_argument("--threads", type=int, default=2)
    dg.add_argument("--force", action="store_true", help="re-run even if a result exists")

    co = sub.add_parser("cost", help="projected CPU-hours of the paper's full setting (whisper-small, full test "
                                     "sets, every grid) from this machine's measured results")
    co.add_argument("--target", default="whisper-small", help="architecture to project to")

    se = sub.add_parser("sensitivity", help="quantize one group of layers at a time (HQQ, g64) and score its KLD "
                                            "to fp32 on 16+16 utterances (skips finished groups)")
    se.add_argument("--bits", type=int, default=3, choices=(3, 2),
                    help="3: every group; 2: the groups whose int3 KLD is below the int3 median")
    se.add_argument("--limit-groups", type=int, default=None, help="stop after this many new groups")
    se.add_argument("--retry-failed", action="store_true", help="run failed groups again")
    se.add_argument("--threads", type=int, default=2)
    se.add_argument("--data", default=None, help="LibriSpeech dir (default $LIBRISPEECH_DIR)")
    se.add_argument("--write-grid", action="store_true",
                    help="then write experiments/mixed.yml from the int3 map (lib.mixed_precision)")

    bm = sub.add_parser("build-model", help="build the embedded whisper-base into the cache (if missing)")
    bm.add_argument("--force", action="store_true", help="rebuild even if cached")

    a = parser.parse_args(argv)
    log_to_stdout()
    absolute_inputs(a)
    try:
        if a.command == "run":
            from .evaluate import evaluate
            from .results import RESULTS_DIR

            if (a.noise is None) != (a.snr is None):
                raise ConfigError("--noise and --snr go together, e.g. --noise babble --snr 10")
            noise = NoiseSpec(kind=a.noise, snr_db=a.snr, seed=a.noise_seed) if a.noise else None
            config = RunConfig(model=a.model, split=tuple(a.split or ("test-clean", "test-other")), limit=a.limit,
                               quant=_spec(a), batch_size=a.batch_size, threads=a.threads, noise=noise)
            check_run(config)
            summary = evaluate(config, data=a.data, results_dir=a.results or RESULTS_DIR, force=a.force)
            print(_one_line(summary))
            return 0 if summary.get("status") == "ok" else 1
        if a.command == "sensitivity":
            from .sensitivity import run_sensitivity

            summary = run_sensitivity(bits=a.bits, limit_groups=a.limit_groups, threads=a.threads, data=a.data,
                                      retry_failed=a.retry_failed)
            print(f"{summary['slug']}: {summary['status']}, {summary['groups_done']}/{len(summary['groups'])} groups")
            if a.write_grid:
                from .mixed_precision import write_mixed_grid

                print(f"wrote {write_mixed_grid()}")
            return 0 if summary["status"] in ("ok", "partial") else 1
        if a.command == "footprint":
            from .footprint import measure_footprint

            summary = measure_footprint(_spec(a), model=a.model, repeats=a.repeats, threads=a.threads,
                                        results_dir=a.results, force=a.force)
            print(_one_line(summary))
            return 0 if summary.get("status") == "ok" else 1
        if a.command == "sweep":
            from .git import commit_checkpoints, commit_results
            from .runner import run_grids

            overrides = {k: v for k, v in (("model", a.model), ("limit", a.limit)) if v is not None}
            options = dict(only=a.only, force=a.force, retry_failed=a.retry_failed,
                           refresh_outdated=a.refresh_outdated, use_notebooks=not a.no_notebooks,
                           dry_run=a.dry_run, first=a.first, last=a.last, data=a.data,
                           overrides=overrides or None,
                           pause_file=a.pause_file, after_job=commit_results if a.commit else None,
                           during_job=commit_checkpoints if a.commit else None, fidelity_only=a.fidelity_only,
                           reverse=a.reverse, footprint=not a.no_footprint)
            if (a.threads_per_task or a.batches_per_shard != 8) and not a.cluster:
                raise ConfigError("--threads-per-task and --batches-per-shard apply to --cluster runs only")
            if a.cluster:
                from .cluster import sweep_on_cluster

                print("cluster sweep: WER only; footprint timing is a single-machine measurement "
                      "(run the sweep without --cluster for it)")
                report = sweep_on_cluster(a.grids, a.cluster, threads_per_task=a.threads_per_task,
                                          batches_per_shard=a.batches_per_shard, **options)
            else:
                report = run_grids(a.grids, **options)
            print(f"{len(report.ran)} pending, {len(report.skipped)} done" if a.dry_run else report.text())
            return 0 if not report.failed else 1
        if a.command == "nonspeech":
            from .git import commit_results
            from .nonspeech import run_grid

            def commit(job, summary):
                commit_results(job, paths=("results/nonspeech",), kind="non-speech result")

            done = run_grid(a.grid, only=a.only, force=a.force, retry_failed=a.retry_failed, data=a.data,
                            after_each=commit if a.commit else None)
            for summary in done:
                print(f"{summary['slug']}: {summary['status']}"
                      + (f" at {summary.get('failed_stage')}: {summary.get('error')}" if summary["status"] != "ok" else ""))
            return 0 if all(s["status"] == "ok" for s in done) else 1
        if a.command == "chapter":
            import yaml

            from .notebooks import CHAPTERS, execute_chapter

            params = {k: yaml.safe_load(v) for k, v in a.parameter}
            for name in (CHAPTERS if a.names == ["all"] else a.names):
                print(execute_chapter(name, params if a.names != ["all"] else None))
            return 0
        if a.command == "table":
            from .display import compact_table
            from .tables import study_table

            table = compact_table(study_table(a.limit))
            if a.status:
                table = table[table["status"] == a.status]
            print(table.astype(object).where(table.notna(), "").to_markdown(index=False))  # blanks, not nan
            return 0
        if a.command == "diagnose":
            from .diagnostics import static_activation_ablation

            summary = static_activation_ablation(calibration=a.calibration, threads=a.threads, force=a.force)
            for row in summary.get("rows", []):
                print(f"{row['variant']}: encoder cosine {row['encoder_cosine_jfk']:.4f}, "
                      f"calibration WER {row['wer_calibration']:.1f}")
            if summary.get("status") != "ok":
                print(f"FAILED: {summary.get('error')}", file=sys.stderr)
            return 0 if summary.get("status") == "ok" else 1
        if a.command == "cost":
            from .cost import cost_text, projected_full_setting

            print(cost_text(projected_full_setting(target=a.target)))
            return 0
        if a.command == "build-model":
            from .models import embedded_whisper_base

            print(embedded_whisper_base(force=a.force))
            return 0
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full results/, a missing folder: the path and the first error
        print(f"error: {io_error_line(exc)}", file=sys.stderr)
        return 2
    return 2


def io_error_line(exc: OSError) -> str:
    """One line for an I/O failure: the path and the first error in its chain, e.g.
    ``'I/O failure at results/x.json: [Errno 30] Read-only file system'``."""
    from .paths import portable

    first = exc
    while first.__context__ is not None and isinstance(first.__context__, OSError):
        first = first.__context__
    path = first.filename or getattr(exc, "filename", None)
    where = f" {portable(str(path))}" if path else ""
    return f"I/O failure at{where}: [Errno {first.errno}] {first.strerror or first}"


def _one_line(summary: dict) -> str:
    if summary.get("status") != "ok":
        return f"{summary['slug']}: FAILED at {summary.get('failed_stage')}: {summary.get('error')}"
    parts = [summary["slug"]]
    for split, m in summary.get("metrics", {}).items():
        if "wer" in m:
            speed = f", RTFx {m['rtfx']:.2f}" if m.get("rtfx") is not None else ""
            parts.append(f"{split} WER {m['wer']:.2f} (n={m['utterances']}{speed})")
    if summary.get("speed_note"):
        parts.append(summary["speed_note"])
    size = summary.get("size", {})
    if size:
        parts.append(f"{size['stored_bytes'] / 1e6:.1f} MB ({size['compression_pct']:+.1f}% smaller)")
    if "latency" in summary:
        parts.append(f"latency median {summary['latency']['median']:.2f} s")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
