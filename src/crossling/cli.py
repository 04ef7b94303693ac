"""The `crossling` command line: parses flags and calls one library function per subcommand.

Only this module prints and draws progress bars. Heavy modules (torch, transformers) are imported
inside the subcommand that needs them, so `crossling --help` stays instant."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from crossling import paths
from crossling.errors import ConfigError, CrosslingError, did_you_mean

# --- progress on stderr: tqdm bars on a terminal, plain lines in a log, nothing under -q -------------

#: In a log (stderr not a terminal), a long step prints a line at least this often.
LOG_LINE_SECONDS = 30.0


#: False under -q (set by `main`): no progress display and no notes on stderr.
_show_progress = True


def _progress_shown() -> bool:
    return _show_progress


def _note(message: str) -> None:
    """A message for the person at the console (not a result): on stderr, unless -q."""
    if _show_progress:
        print(message, file=sys.stderr, flush=True)


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def tqdm_track(items: Iterable, total: int, description: str) -> Iterable:
    """The CLI's `crossling.progress.Track`: a tqdm bar on a terminal; in a log, a plain line with
    done / total at least every 30 s and at the end (no carriage returns); nothing under -q."""
    if not _progress_shown():
        return items
    if not _on_terminal():
        return _log_lines(items, total, description)
    from tqdm import tqdm

    return tqdm(items, total=total, desc=description, unit="", dynamic_ncols=True, leave=False)


def _log_lines(items: Iterable, total: int, description: str) -> Iterable:
    started = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_LINE_SECONDS or done == total:
            print(f"{description}: {done}/{total} ({_duration(now - started)})", file=sys.stderr, flush=True)
            last = now


class _GridDisplay:
    """The live grid display on a terminal: one tqdm bar of finished runs with done / running / failed /
    pending counts and the ETA (a run's own steps show below it when this process runs it)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event.total, desc="runs", unit="run", dynamic_ncols=True)
        self.bar.n = event.done + event.failed
        self.bar.set_postfix_str(_grid_counts(event))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _GridLog:
    """The grid display in a log: a plain line when a run ends, and at least every `every` seconds
    (from a timer thread: a run can take longer than that), each with runs done / total."""

    def __init__(self, every: float | None = None) -> None:
        self.every, self.last_event, self.last_line = every or LOG_LINE_SECONDS, None, time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="crossling-progress", daemon=True)
        self._timer.start()

    def __call__(self, event) -> None:
        with self._lock:
            self.last_event = event
        if event.event in ("done", "failed"):
            took = f" in {_duration(event.seconds)}" if event.seconds is not None else ""
            self._line(f"run {event.run_id} {event.event}{took}; ")

    def _tick(self) -> None:
        while not self._stop.wait(max(0.05, self.every / 10)):
            if time.monotonic() - self.last_line >= self.every and self.last_event is not None:
                self._line("")

    def _line(self, prefix: str) -> None:
        with self._lock:
            event, self.last_line = self.last_event, time.monotonic()
            print(f"{prefix}runs {event.done + event.failed}/{event.total}: {_grid_counts(event)}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop the timer; a last line says where the grid ended (also when every run was done before)."""
        self._stop.set()
        self._timer.join()
        if self.last_event is not None:
            self._line("ended: ")


class _NoDisplay:
    def __call__(self, event) -> None:
        pass

    def close(self) -> None:
        pass


def grid_display():
    """The live display of a grid for this console: a bar on a terminal, lines in a log, none under -q."""
    if not _progress_shown():
        return _NoDisplay()
    return _GridDisplay() if _on_terminal() else _GridLog()


def _grid_counts(event) -> str:
    eta = "?" if event.eta_seconds is None else _duration(event.eta_seconds)
    elsewhere = f", {event.elsewhere} elsewhere" if event.elsewhere else ""
    step = f"; current run: {event.step}" if event.step else ""
    return (f"done {event.done}, running {event.running}{elsewhere}, failed {event.failed}, "
            f"pending {event.pending}; ETA {eta}{step}")


def print_json_lines(objects: Iterable[dict]) -> None:
    for obj in objects:
        print(json.dumps(obj, ensure_ascii=False), flush=True)


# --- conventions every command shares -------------------------------------------------------------


class UsageError(Exception):
    """A command line argparse cannot parse (raised instead of exiting, so --json can report it)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse with crossling's conventions on every (sub)command: -v/-q before or after the
    subcommand, 'did you mean' for a mistyped choice, usage errors raised as `UsageError`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        verbosity = self.add_mutually_exclusive_group()
        # SUPPRESS: a subcommand that is not given -v/-q keeps what was given before it.
        verbosity.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                               default=argparse.SUPPRESS, help="also log crossling's debug messages")
        verbosity.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                               default=argparse.SUPPRESS, help="only warnings and errors; no progress display")

    def _check_value(self, action, value) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{did_you_mean(value, list(action.choices))}; choose from {choices}")

    def error(self, message: str):
        raise UsageError(self, message)


def _log_level(args) -> int:
    return getattr(args, "log_level", logging.INFO)


def _configure_logging(level: int) -> None:
    """crossling's own messages at `level` (DEBUG under -v); other libraries' only from WARNING up, so
    -v does not bring matplotlib's or urllib3's debug chatter."""
    global _show_progress

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # -q filters at the console, not at crossling's logger: a run's train.log still gets its INFO lines.
    logging.getLogger("crossling").setLevel(min(level, logging.INFO))
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:  # the console handler basicConfig made (not pytest's)
            handler.setLevel(level if level > logging.INFO else logging.NOTSET)
    _show_progress = level <= logging.INFO


def _json_mode(args) -> bool:
    """Whether the command was asked for JSON output (then its errors are JSON too)."""
    return bool(getattr(args, "json", False)) or getattr(args, "format", None) == "json"


def _fail(command: str, message: str, *, as_json: bool, kind: str = "UsageError", usage: str = "") -> int:
    """Report a user's mistake: on stderr, or as {"error": ...} on stdout under --json; exit status 2."""
    if as_json:
        print(json.dumps({"error": message, "type": kind, "command": command}, ensure_ascii=False), flush=True)
    else:
        print(f"{usage}{command}: error: {message}", file=sys.stderr)
    return 2


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """The --json flag: the result as JSON on standard output, and errors as JSON objects."""
    parser.add_argument("--json", action="store_true",
                        help=f"print {what} as JSON on standard output (an error as {{\"error\": ...}}, exit 2)")


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option, hidden from --help: works as the new one, with a warning."""

    def __init__(self, *args, new: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _deprecated_alias(parser: argparse.ArgumentParser, old: str, option: argparse.Action) -> None:
    """Accept `old` as a hidden alias of the option `option` (one spelling per option across commands)."""
    parser.add_argument(old, dest=option.dest, type=option.type, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        action=_DeprecatedAlias, new=option.option_strings[-1])


# --- models --------------------------------------------------------------------------------------


def _add_models(sub) -> None:
    parser = sub.add_parser("models", help="list the registered checkpoints and their facts")
    parser.add_argument("--json", action="store_true", help="one JSON object per checkpoint")
    parser.set_defaults(handler=_cmd_models)


def _pretrain_hours(hours: float) -> str:
    """Whole hours for the reference models, two decimals for the mini-zoo's fractions of an hour."""
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:.2f}"


def _cmd_models(args) -> int:
    from dataclasses import asdict

    from crossling.registry import all_checkpoints

    checkpoints = all_checkpoints()
    if args.json:
        print_json_lines({**asdict(c), "uncertain": dict(c.uncertain), "multilingual": c.multilingual}
                         for c in checkpoints)
        return 0
    print(f"{'alias':<20} {'type':<18} {'hours':>10}  {'languages':<22} {'params':>7}  {'licence':<13} source")
    for c in checkpoints:
        languages = ",".join(c.pretrain_languages) or "-"
        if c.pretrain_language_count > len(c.pretrain_languages):
            languages = f"{c.pretrain_language_count:,} languages"
        hours, params = _pretrain_hours(c.pretrain_hours), f"{c.parameters_millions:,.0f}M" if c.parameters_millions else "-"
        print(f"{c.alias:<20} {c.model_type:<18} {_unsure(hours, c, 'pretrain_hours'):>10}  "
              f"{_unsure(languages, c, 'pretrain_languages', 'pretrain_language_count'):<22} "
              f"{_unsure(params, c, 'parameters_millions'):>7}  {_unsure(c.licence or '-', c, 'licence'):<13} {c.source}")
    print("? = not confirmed offline (`crossling models --json` says why); sources per checkpoint in --json")
    return 0


def _unsure(text: str, checkpoint, *fields: str) -> str:
    return f"{text}?" if set(fields) & set(checkpoint.uncertain_fields) else text


# --- prepare -------------------------------------------------------------------------------------


def _add_prepare(sub) -> None:
    from crossling.corpora import FORMATS

    parser = sub.add_parser("prepare", help="a corpus (Common Voice, manifest folder, HF dataset, lhotse) -> "
                                            "prepared languages")
    parser.add_argument("source", type=path_arg, metavar="CORPUS",
                        help="cv-corpus-<ver>-<date>/ folder or .tar.gz, or a folder of <lang>/ folders holding "
                             "manifest.tsv|csv|jsonl, a saved `datasets` dataset or lhotse manifests")
    parser.add_argument("--languages", nargs="+", required=True, metavar="LANG", help="e.g. pt de sv-SE")
    parser.add_argument("--out", type=path_arg, required=True, help="prepared root (also holds the decode cache)")
    parser.add_argument("--train-hours", type=float, help="exact train budget (default 5)")
    parser.add_argument("--seed", type=seed_arg, help="seed of the train subset (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: CPU count)")
    parser.add_argument("--dev-max", type=int, metavar="K", help="keep the first K dev utterances")
    parser.add_argument("--test-max", type=int, metavar="K", help="keep the first K test utterances")
    parser.add_argument("--eval-seed", type=seed_arg,
                        help="with --dev-max/--test-max: pick K utterances with this seed instead of the first K")
    parser.add_argument("--max-hours-per-speaker", type=float, metavar="H",
                        help="cap each speaker's share of the train subset")
    parser.add_argument("--vocab-threshold", type=float,
                        help="minimum relative character frequency in train text (default 1e-5 = 0.001 %%)")
    corpus = parser.add_argument_group("corpus format (see README: Your own corpus)")
    corpus.add_argument("--format", choices=FORMATS,
                        help="the corpus format (default: detected from the language folders)")
    corpus.add_argument("--audio-column", help="hf: the audio column (default audio)")
    corpus.add_argument("--text-column", help="hf: the transcript column (default text)")
    corpus.add_argument("--speaker-column", help="hf: the speaker column, if any (default speaker)")
    corpus.add_argument("--gender-column", help="hf: the gender column, if any (default gender)")
    corpus.add_argument("--held-out-speakers", type=float, metavar="FRACTION",
                        help="a corpus without splits: the fraction of speakers drawn for each of dev and test "
                             "(default 0.1)")
    corpus.add_argument("--split-seed", type=int, help="seed of those drawn speakers (default 0)")
    parser.add_argument("--json", action="store_true", help="one JSON object per language")
    parser.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from crossling.corpora import CorpusOptions
    from crossling.prepare import PrepareOptions, prepare_release

    prepared = prepare_release(args.source, args.languages, args.out, _options_from_flags(PrepareOptions, args),
                               corpus=_options_from_flags(CorpusOptions, args), workers=args.workers,
                               track=tqdm_track)
    if args.json:
        print_json_lines(p.to_json() for p in prepared)
        return 0
    for s in (p.summary for p in prepared):
        skipped = ", ".join(f"{k} {v}" for k, v in s.skipped.items() if v) or "none"
        print(f"{s.language}: {s.train_hours:.3f} h train ({s.train_utterances} utts, "
              f"{s.train_speakers} speakers), {s.dev_utterances} dev, {s.test_utterances} test; "
              f"{len(s.vocab)} chars, OOV dev {s.oov_rate['dev']:.2%} test {s.oov_rate['test']:.2%}; "
              f"skipped: {skipped}")
    print(f"prepared {len(prepared)} language(s) in {args.out}")
    return 0


def _options_from_flags(options_class: type, args) -> object:
    """A stage's options dataclass from the flags of the same names that were given; the others keep the
    dataclass's defaults (declared there only)."""
    import dataclasses

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(options_class)
             if getattr(args, f.name, None) is not None}
    return options_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def _add_export(sub) -> None:
    parser = sub.add_parser("export", help="a prepared language -> lhotse manifests or a Hugging Face dataset")
    parser.add_argument("prepared", type=path_arg, metavar="PREPARED", help="prepared root (crossling prepare --out)")
    parser.add_argument("--language", required=True, help="a language prepared there")
    parser.add_argument("--to", required=True, choices=["lhotse", "hf"], help="lhotse manifests or an HF dataset")
    parser.add_argument("--out", type=path_arg, required=True, help="folder to write into")
    _json_flag(parser, "the files written")
    parser.set_defaults(handler=_cmd_export)


def _cmd_export(args) -> int:
    from crossling.export import export_prepared

    written = export_prepared(args.prepared, args.language, args.to, args.out)
    if args.json:
        print(json.dumps({"files": [str(path) for path in written]}, ensure_ascii=False))
        return 0
    for path in written:
        print(path)
    return 0


# --- finetune / evaluate -------------------------------------------------------------------------


def _add_finetune(sub) -> None:
    parser = sub.add_parser("finetune", help="fine-tune one checkpoint on one prepared language (one run)")
    parser.add_argument("--data", type=path_arg, required=True, help="prepared root (from `crossling prepare`)")
    parser.add_argument("--language", required=True, help="a language prepared under --data, e.g. pt")
    parser.add_argument("--model", required=True, metavar="ALIAS|HUB_ID|PATH",
                        help="registry alias (see `crossling models`), hub id, local HF directory or random-init")
    parser.add_argument("--seed", type=seed_arg, default=0, help="run seed (default 0)")
    parser.add_argument("--out", type=path_arg, required=True, help="run directory (resumes if it holds a checkpoint)")
    parser.add_argument("--config", type=path_arg, default=None, help="run config TOML (recipe values)")
    parser.add_argument("--steps", type=int, default=None, help="override max_steps")
    parser.add_argument("--checkpoint-minutes", type=float, default=None, metavar="M",
                        help="override checkpoint_minutes: a resume file at least every M minutes of wall time "
                             "(default 10; not part of the run's identity)")
    learning_rate = parser.add_argument("--learning-rate", type=float, default=None, help="override learning_rate")
    _deprecated_alias(parser, "--lr", learning_rate)
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    _run_option_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the result record as one JSON object")
    parser.set_defaults(handler=_cmd_finetune)


def _run_option_flags(parser) -> None:
    parser.add_argument("--max-step-seconds", type=float, default=None, metavar="S",
                        help="audio per forward/backward pass; the recipe's batch is accumulated over passes "
                             "(same run; default: from the GPU's memory, none on CPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute activations in backward: less GPU memory, about 1/3 more compute")
    parser.add_argument("--half-precision-model", action="store_true",
                        help="save the final model in 16 bits (the run's bf16/fp16; bf16 after an fp32 run): half "
                             "the disk; the run's scores are computed before, from the trained weights")


def _run_options(args):
    from crossling.budget import RunOptions

    if args.max_step_seconds is None and not args.gradient_checkpointing and not args.half_precision_model:
        return None
    return RunOptions(max_step_seconds=args.max_step_seconds, gradient_checkpointing=args.gradient_checkpointing,
                      half_precision_model=args.half_precision_model)


def _cmd_finetune(args) -> int:
    from crossling.config import load_train_config
    from crossling.finetune import finetune

    config = load_train_config(args.config, {"max_steps": args.steps, "learning_rate": args.learning_rate,
                                             "checkpoint_minutes": args.checkpoint_minutes})
    record = finetune(args.data, args.language, args.model, seed=args.seed, out=args.out, config=config,
                      device=args.device, track=tqdm_track, options=_run_options(args))
    test, dev = record.scores["test"], record.scores["dev"]
    if args.json:
        print(json.dumps({"cer": test.cer, "wer": test.wer, **record.to_json()}, ensure_ascii=False))
        return 0
    skipped = ", ".join(f"{k} {v}" for k, v in record.skipped.items() if v) or "none"
    print(f"{args.model} on {args.language} (seed {args.seed}): test CER {_rate(test.cer)} WER {_rate(test.wer)}, "
          f"dev CER {_rate(dev.cer)}; {record.steps} steps, skipped: {skipped}; "
          f"{record.cost.wall_seconds:.0f} s on {record.cost.device}")
    if record.collapse.warned:
        print(f"warning: output was blank-only for long stretches "
              f"(blank-only test fraction {record.collapse.blank_only_fraction:.2f})")
    print(f"model + processor: {paths.run_model_dir(args.out)}")
    return 0


def _rate(value: float | None) -> str:
    """An error rate as printed; '-' where there was no reference text to score."""
    return "-" if value is None else f"{value:.4f}"


def _add_evaluate(sub) -> None:
    parser = sub.add_parser("evaluate", help="score a fine-tuned model (run directory or HF directory)")
    parser.add_argument("model", type=path_arg, metavar="RUN_DIR_OR_MODEL")
    parser.add_argument("--data", type=path_arg, required=True, help="prepared root")
    parser.add_argument("--language", required=True, help="a language prepared under --data")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"], choices=["train", "dev", "test"])
    parser.add_argument("--out", type=path_arg, default=None, help="write hypotheses and scores.json here")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from crossling.evaluate import evaluate

    result = evaluate(args.model, args.data, args.language, splits=tuple(args.splits), out=args.out,
                      device=args.device, track=tqdm_track)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
        return 0
    for split, s in result.scores.items():
        genders = "; ".join(f"{g} {_rate(v.cer)}" for g, v in s.by_gender.items())
        print(f"{args.language} {split}: CER {_rate(s.cer)} WER {_rate(s.wer)} ({s.utterances} utterances"
              + (f"; by gender: {genders})" if genders else ")"))
    return 0


# --- synth -----------------------------------------------------------------------------------------


def _add_synth(sub) -> None:
    parser = sub.add_parser("synth", help="synthesize a Common Voice-shaped corpus offline (eSpeak NG + wordfreq)")
    parser.add_argument("--languages", nargs="+", required=True, metavar="LANG", help="e.g. es it pt nl de fi tr")
    parser.add_argument("--hours", type=float, required=True, help="train hours per language (dev/test: 10 %% each)")
    parser.add_argument("--out", type=path_arg, required=True, help="corpus root: <out>/<lang>/clips, *.tsv")
    parser.add_argument("--seed", type=seed_arg, help="seed of sentences, speakers and audio (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes (default: CPU count)")
    parser.add_argument("--dev-fraction", type=float, help="dev hours as a fraction of --hours (default 0.1)")
    parser.add_argument("--test-fraction", type=float, help="test hours as a fraction of --hours (default 0.1)")
    parser.add_argument("--speakers", type=int, nargs=3, metavar=("TRAIN", "DEV", "TEST"),
                        help="disjoint speakers per split (default 24 6 6)")
    parser.add_argument("--words", type=int, nargs=2, metavar=("MIN", "MAX"), dest="word_range",
                        help="words per sentence (default 3 6, about 2 s per clip)")
    parser.add_argument("--vocabulary", type=int, metavar="N",
                        help="draw the words from the N most frequent of the language (default 5000)")
    parser.add_argument("--noise", action="store_true", default=None,
                        help="give each speaker a light room (reverb + noise)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=_cmd_synth)


def _cmd_synth(args) -> int:
    from crossling.synth import SynthOptions, synthesize_corpus

    options = _options_from_flags(SynthOptions, args)
    summary = synthesize_corpus(args.out, args.languages, options, workers=args.workers, track=tqdm_track)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    for language, s in summary["languages"].items():
        parts = ", ".join(f"{split} {s[split]['hours']:.3f} h ({s[split]['utterances']} clips, "
                          f"{s[split]['speakers']} speakers)" for split in ("train", "dev", "test"))
        print(f"{language}: {parts}" + (" [already there]" if s["reused"] else ""))
    print(f"synthesized {summary['synthesized_seconds'] / 3600:.3f} h of audio in {summary['wall_seconds']:.1f} s "
          f"with {summary['workers']} worker(s): {summary['audio_seconds_per_second']:.0f} s of audio per second "
          f"({summary['audio_seconds_per_cpu_second']:.0f} per CPU second)")
    print(f"corpus: {args.out} (next: crossling prepare {args.out} --languages ... --out PREPARED)")
    return 0


# --- study / results -----------------------------------------------------------------------------


def _add_study(sub) -> None:
    parser = sub.add_parser("study", help="plan, run and follow a study (checkpoints x languages x seeds)")
    commands = parser.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    plan = commands.add_parser("plan", help="count the study's runs: total, done, failed, running, pending")
    run = commands.add_parser("run", help="run what is not done (resumable; safe to start several times)")
    status = commands.add_parser("status", help="states, cost and projected remaining time")
    for command in (plan, run, status):
        command.add_argument("study", metavar="STUDY", help="study file (.toml) or a shipped example: reference, mini "
                             "(its store: <name>.runs/ in the current directory)"
                             + (", or a study's store directory" if command is status else ""))
        command.add_argument("--store", type=path_arg, default=None,
                             help="results store (default: [store] dir of the study, else <study>.runs/ beside it)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local (default): in this process, or N grid processes with --workers N; ray: Ray tasks")
    run.add_argument("--workers", type=int, default=1,
                     help="runs at once (default 1); local: N grid processes sharing the store, each with "
                          "--threads torch threads and, where GPUs are visible, its own GPU (more workers "
                          "than GPUs is refused)")
    run.add_argument("--threads", type=int, default=None,
                     help="local --workers N > 1: torch threads per grid process (default: usable cores / N, "
                          "at least 1)")
    run.add_argument("--shard", type=_shard_arg, default=(0, 1), metavar="i/n",
                     help="run only shard i of n (0-based: 0/4 ... 3/4), e.g. one per machine")
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    run.add_argument("--address", default=None, help="ray: join this Ray cluster (e.g. auto or HEAD:6379)")
    run.add_argument("--cpus-per-run", type=float, default=None, help="ray: CPUs per run (default 1)")
    run.add_argument("--gpus-per-run", type=float, default=None, help="ray: GPUs per run (default: 1 when the cluster has GPUs, else 0; 0 on a GPU cluster is "
                          "refused unless --device cpu)")
    run.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    _json_flag(run, "the grid's summary")
    _run_option_flags(run)
    plan.add_argument("--json", action="store_true", help="print the design checks and cost as one JSON object")
    plan.add_argument("--alpha", type=float, default=0.05, help="significance level of the design checks (default 0.05)")
    plan.add_argument("--seed-sd", type=float, default=None, metavar="CER",
                      help="prior sd of test CER over seeds (default: the bundled measurement for the model size)")
    status.add_argument("--runs", action="store_true", help="also list every run with its state and cost")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    plan.set_defaults(handler=_cmd_study_plan)
    run.set_defaults(handler=_cmd_study_run)
    status.set_defaults(handler=_cmd_study_status)


def _shard_arg(value: str) -> tuple[int, int]:
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise argparse.ArgumentTypeError(f"shard must look like i/n (e.g. 0/4), got {value!r}")
    return int(index), int(count)


def _cmd_study_plan(args) -> int:
    from crossling.design import design_check
    from crossling.grid import plan_study
    from crossling.study import find_study

    study = find_study(args.study)
    counts = plan_study(study, args.store)
    check = design_check(study, alpha=args.alpha, seed_sd=args.seed_sd, memory=True)
    if args.json:
        from dataclasses import asdict

        print(json.dumps({"runs": asdict(counts), "design": check.to_json()}, ensure_ascii=False, allow_nan=False))
        return 0
    print(f"{counts.total} runs: {counts.done} done, {counts.failed} failed, {counts.running} running, "
          f"{counts.pending} pending")
    _print_design(check)
    return 0


def _print_design(check) -> None:
    """The design checks: per question whether it can reach alpha, power, Holm families and cost."""
    print(f"\ndesign: {check.checkpoints} checkpoints x {check.languages} languages x {check.seeds} seeds; "
          f"can each question reach alpha {check.alpha}?")
    for q in check.questions:
        verdict = "yes" if q.testable else "NO "
        extra = "; ".join(x for x in (q.reason, q.note) if x)
        holm = f" after Holm x{q.family}" if q.family > 1 else ""
        print(f"  {verdict} {q.question}: {q.test}; unit {q.unit} ({q.n}); smallest p{holm} {_p(q.min_p)}"
              + (f" ({extra})" if extra else ""))
    families = ", ".join(f"{name} {size}" for name, size in check.holm_families.items())
    print(f"Holm families: {families}")
    power = check.power
    cer = f" = {power.cer:.3f} CER (seed sd {power.seed_sd:.4f}; {power.prior})" if power.cer == power.cer else \
        f" ({power.prior})"
    print(f"detectable with 80 % power, per language and pair (alpha {power.alpha_per_pair:.2g} per pair): a mean "
          f"CER difference of {power.in_seed_sd:.2f} seed sds{cer}")
    cost = check.cost
    if cost.unsized:
        print(f"cost: cannot be estimated for {cost.runs} runs: " + "; ".join(cost.unsized))
        return
    print(f"cost: {cost.runs} runs x {cost.steps} steps of {cost.batch_seconds:g} s of audio "
          f"({_sizes(cost.checkpoints)}; {cost.total_flops:.3g} FLOP in all)")
    mean = " on average" if len({(c.parameters, c.step_flops) for c in cost.checkpoints}) > 1 else ""
    for device in cost.devices:
        machine = f"; {_duration(device.wall_hours * 3600)} wall with {device.at_once} at once" if device.at_once > 1 else ""
        print(f"  {device.device}: {device.hours_per_run:.3g} h per run{mean}, {device.device_hours:.3g} device-hours"
              f"{machine} ({device.source})")
    _print_memory(cost)


def _print_memory(cost) -> None:
    """Device memory of the most demanding run and the disk the study's models take (design.RunMemory)."""
    unmeasured = [c.checkpoint for c in cost.checkpoints if c.memory is None]
    if unmeasured:
        print(f"memory and disk: cannot be estimated (transformers cannot build {', '.join(unmeasured)})")
        return
    largest = max(cost.checkpoints, key=lambda c: c.memory.peak_bytes).memory
    where = "GPU" if "GPU" in largest.precision else "RAM"
    print(f"memory per run ({largest.precision}, meta-device estimate): {_bytes(largest.state_bytes)} weights, "
          f"gradients and Adam + {_bytes(largest.activation_bytes)} activations of a {cost.batch_seconds:g} s batch = "
          f"{_bytes(largest.peak_bytes)} {where} (less with --max-step-seconds or --gradient-checkpointing)")
    print(f"disk: {cost.runs} final models, {_bytes(cost.disk_bytes)} in all; plus {_bytes(largest.resume_file_bytes)} "
          f"per run in flight (its resume file, deleted when the run finishes)")


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"


def _sizes(checkpoints) -> str:
    """Each size of model in the grid once: its checkpoints, trainable parameters and FLOPs per step."""
    by_architecture: dict[tuple, list] = {}
    for c in checkpoints:
        by_architecture.setdefault((c.parameters, c.step_flops), []).append(c)
    if len(by_architecture) == 1:
        (first, *_), = by_architecture.values()
        return f"each checkpoint {_count(first.parameters)} params, {first.step_flops:.3g} FLOP per step"
    return "; ".join(f"{', '.join(c.checkpoint for c in same)} {_count(same[0].parameters)} params, "
                     f"{same[0].step_flops:.3g} FLOP per step" for same in by_architecture.values())


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.3g}B" if parameters >= 1e9 else f"{parameters / 1e6:.3g}M"


def _p(value: float) -> str:
    return "n/a" if value != value else f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _cmd_study_run(args) -> int:
    from dataclasses import asdict

    from crossling.grid import open_store, run_study
    from crossling.study import find_study

    study = find_study(args.study)
    executor = _executor(args)
    store = open_store(study, args.store).root
    _note(f"store: {store.resolve()}")
    with _live_display() as display:
        summary = run_study(study, store, executor=executor, shard=args.shard, retry_failed=args.retry_failed,
                            progress=display, device=args.device, track=tqdm_track, run_options=_run_options(args))
    if args.json:
        print(json.dumps({**asdict(summary), "done_now": summary.done_now, "store": str(store)}, ensure_ascii=False))
        return 1 if summary.failed else 0
    print(f"{summary.executed} run(s) executed in {_duration(summary.wall_seconds)}: {summary.done_now} done, "
          f"{summary.failed} failed; {summary.already_done} already done, {summary.elsewhere} running elsewhere, "
          f"{summary.skipped_failed} failed before (--retry-failed runs them again)")
    return 1 if summary.failed else 0


@contextlib.contextmanager
def _live_display():
    """The grid display for this console while runs log to their own train.log: the console's log
    handlers show only warnings meanwhile, unless -v was given."""
    display = grid_display()
    verbose = logging.getLogger("crossling").level == logging.DEBUG
    handlers = {handler: handler.level for handler in logging.getLogger().handlers}
    for handler in handlers if not verbose else ():
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield display
    finally:
        display.close()
        for handler, level in handlers.items():
            handler.setLevel(level)


_RAY_FLAGS = {"address": "--address", "cpus_per_run": "--cpus-per-run", "gpus_per_run": "--gpus-per-run"}


def _executor(args):
    """The executor the flags ask for; a flag of another executor is an error, not silently ignored."""
    from crossling.executors import LocalExecutor, ProcessExecutor, RayExecutor

    if args.executor == "ray":
        if args.threads is not None:
            raise ConfigError("--threads applies to the local executor (Ray gives each run --cpus-per-run CPUs)")
        given = {name: getattr(args, name) for name in _RAY_FLAGS if getattr(args, name) is not None}
        return RayExecutor(workers=args.workers, **given)
    stray = [flag for name, flag in _RAY_FLAGS.items() if getattr(args, name) is not None]
    if stray:
        raise ConfigError(f"{', '.join(stray)} apply to --executor ray only")
    if args.workers == 1 and args.threads is None:
        return LocalExecutor()
    return ProcessExecutor(workers=args.workers, threads=args.threads)


def _study_or_store(text: str):
    """A store directory (as a Path), else the study file or shipped example it names."""
    from crossling.study import find_study

    return path_arg(text) if path_arg(text).is_dir() else find_study(text)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _cmd_study_status(args) -> int:
    from dataclasses import asdict

    from crossling.grid import store_status, study_status

    source = _study_or_store(args.study)
    status = study_status(source, args.store) if not isinstance(source, Path) else store_status(source)
    if args.json:
        print(json.dumps(asdict(status), ensure_ascii=False))
        return 0
    c = status.counts
    print(f"{c.total} runs: {c.done} done, {c.failed} failed, {c.running} running, {c.pending} pending")
    if c.done:
        print(f"cost of done runs: {_duration(status.wall_seconds)} wall, {status.device_hours:.2f} device hours, "
              f"{status.audio_seconds_per_second:.1f} audio s trained per s, peak memory {status.peak_memory_mb:.0f} MB")
        print(f"mean run {_duration(status.mean_run_seconds)}; projected remaining "
              f"{_duration(status.remaining_seconds)} for one worker (divide by the number of workers)")
    for run in status.runs:
        if args.runs or run.state in ("failed", "running"):
            cost = "" if run.wall_seconds is None else (
                f" CER {run.cer:.4f}; {run.wall_seconds:.0f} s, {run.device_hours:.3f} device h, "
                f"{run.audio_seconds_per_second:.0f} audio s/s, peak {run.peak_memory_mb:.0f} MB")
            print(f"  {run.state:<8} {run.run_id}{cost} {run.owner}{run.error}")
        if run.quarantined:
            print(f"  corrupt  {run.run_id}: renamed aside {', '.join(run.quarantined)}"
                  + (" (the run runs again)" if run.state != "done" else ""))
    return 0


def _add_results(sub) -> None:
    parser = sub.add_parser("results", help="the tidy results table of a study (one row per run)")
    parser.add_argument("study", metavar="STUDY", help="study file, shipped example name, or a store directory")
    parser.add_argument("--store", type=path_arg, default=None, help="results store (default: the study's)")
    parser.add_argument("--format", choices=["csv", "parquet", "json"], default=None,
                        help="default csv (json with --json)")
    parser.add_argument("--out", type=output_arg, default="-", metavar="FILE",
                        help="write the table to FILE; '-' (the default) prints it to standard output")
    _json_flag(parser, "the table (the same as --format json)")
    parser.set_defaults(handler=_cmd_results)


def _cmd_results(args) -> int:
    from crossling.atomic import STDOUT
    from crossling.results import export_results, load_results_table

    if args.json and args.format not in (None, "json"):
        raise ConfigError(f"--json prints the table as JSON; it cannot be combined with --format {args.format}")
    table = load_results_table(_study_or_store(args.study), args.store)
    export_results(table, args.out, args.format or ("json" if args.json else "csv"))
    if str(args.out) != STDOUT:
        done = int((table["status"] == "done").sum())
        _note(f"{len(table)} runs ({done} done) -> {args.out}")
    return 0


# --- report / recommend --------------------------------------------------------------------------


def _add_report(sub) -> None:
    parser = sub.add_parser("report", help="statistics, tables and figures of a study: HTML, Markdown, LaTeX, CSV")
    parser.add_argument("source", metavar="STUDY_OR_RESULTS",
                        help="results file (.csv/.json/.parquet), study store directory, study file or example name")
    parser.add_argument("--out", type=output_arg, required=True, metavar="DIR|-",
                        help="directory for report.html, report.md, tables/, figures/; '-': only the HTML page, "
                             "self-contained (figures embedded), on standard output")
    parser.add_argument("--store", type=path_arg, default=None, help="results store of a study (default: the study's)")
    parser.add_argument("--title", default=None, help="report title (default: from the source's name)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--p-adjust", default="holm",
                        help="multiple-comparison correction of post-hoc tests: holm (default), bonferroni, "
                             "sidak, holm-sidak, simes-hochberg, hommel, fdr_bh, fdr_by, none")
    _json_flag(parser, "the files written")
    parser.set_defaults(handler=_cmd_report)


def _cmd_report(args) -> int:
    from crossling.atomic import STDOUT, write_text_atomic
    from crossling.report import report_from, report_page_from

    options = dict(store=args.store, title=args.title, alpha=args.alpha, p_adjust=args.p_adjust)
    if str(args.out) == STDOUT:
        if args.json:
            raise ConfigError("--out - prints the HTML page itself; --json needs an output directory")
        write_text_atomic(STDOUT, report_page_from(args.source, **options))
        return 0
    written = report_from(args.source, args.out, **options)
    if args.json:
        print(json.dumps({"report": str(written["report.html"]), "files": {k: str(v) for k, v in written.items()}}))
        return 0
    print(f"{len(written)} files written; open {written['report.html']}")
    return 0


def _add_recommend(sub) -> None:
    parser = sub.add_parser("recommend", help="rank checkpoints for a target language, with uncertainty and evidence")
    parser.add_argument("--language", required=True, help="Common Voice language code (e.g. pt, sv-SE), any language")
    parser.add_argument("--results", default=None, metavar="STUDY_OR_RESULTS",
                        help="results file, store directory or study (default: a prior from registry facts)")
    parser.add_argument("--store", type=path_arg, default=None, help="results store of a study (default: the study's)")
    evidence = parser.add_mutually_exclusive_group()
    evidence.add_argument("--data", type=path_arg, default=None, metavar="PREPARED",
                          help="your prepared data: use its `crossling rank` record of --language")
    evidence.add_argument("--rank", type=path_arg, default=None, metavar="RECORD",
                          help="a rank record written by `crossling rank --out`")
    parser.add_argument("--top", type=int, default=0, help="show only the best N (default: all)")
    parser.add_argument("--json", action="store_true", help="print the recommendation as one JSON object")
    parser.add_argument("--out", type=output_arg, default="-", metavar="FILE",
                        help="write the recommendation to FILE; '-' (the default) prints it to standard output")
    parser.set_defaults(handler=_cmd_recommend)


def _cmd_recommend(args) -> int:
    from crossling.atomic import write_text_atomic
    from crossling.recommend import recommend_from

    record = args.rank or (paths.rank_record_path(args.data, args.language) if args.data else None)
    result = recommend_from(args.language, args.results, args.store, rank_record=record)
    candidates = result.candidates[: args.top] if args.top > 0 else result.candidates
    if args.json:
        text = json.dumps({**result.to_dict(), "candidates": [c.__dict__ for c in candidates]}, ensure_ascii=False)
    else:
        sentences = [f"  {sentence}" for sentence in result.sentences()]
        text = "\n".join([f"{result.language}: {result.notes}", *sentences, *map(_candidate_line, candidates)])
    write_text_atomic(args.out, text + "\n")
    return 0


def _candidate_line(c) -> str:
    estimate = {"prior": "   (prior)     ", "rank": f"{c.score:>10.5f} score"}.get(  # a rank score is no CER
        c.basis, f"{c.predicted:.4f} ± {c.uncertainty:.4f}")
    return f"{c.rank:>3}. {c.checkpoint:<22} {estimate}  {c.basis:<9} {c.evidence}"


# --- rank ----------------------------------------------------------------------------------------


def _add_rank(sub) -> None:
    from crossling.rank import LAYER_CHOICES
    from crossling.rankrecord import BOOTSTRAP_REPLICATES, DEFAULT_ESTIMATOR, ESTIMATORS
    from crossling.transferability import ProbeRecipe

    parser = sub.add_parser("rank", help="rank checkpoints for a language from frozen features, before fine-tuning")
    parser.add_argument("--data", type=path_arg, required=True, help="prepared root (from `crossling prepare`)")
    parser.add_argument("--language", required=True, help="a language prepared under --data, e.g. pt")
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="checkpoints to rank: aliases (`crossling models`), hub ids, local directories")
    parser.add_argument("--layers", choices=LAYER_CHOICES, default="all",
                        help="score every hidden layer and report the best (default), or the last only")
    parser.add_argument("--budget-seconds", type=float, default=300.0,
                        help="seconds of train audio to score on, drawn at random with --seed (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, probe and random init (default 0)")
    parser.add_argument("--estimator", choices=ESTIMATORS, default=DEFAULT_ESTIMATOR,
                        help=f"what the ranking is by (default {DEFAULT_ESTIMATOR})")
    parser.add_argument("--compare", action="store_true",
                        help="compute every estimator, not only --estimator (to compare them with --results)")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_REPLICATES,
                        help=f"bootstrap replicates over utterances (default {BOOTSTRAP_REPLICATES})")
    parser.add_argument("--probe-steps", type=int, default=ProbeRecipe.steps,
                        help=f"Adam steps of the linear CTC probe (default {ProbeRecipe.steps})")
    parser.add_argument("--results", default=None, metavar="STUDY_OR_RESULTS",
                        help="fine-tuned results of the same language and checkpoints: show predicted vs measured")
    parser.add_argument("--store", type=path_arg, default=None, help="results store of a study (default: the study's)")
    parser.add_argument("--out", type=output_arg, default=None, metavar="FILE",
                        help="rank record to write (default PREPARED/_rank/LANG.json, read by recommend --data); "
                             "'-' prints it to standard output (the ranking then goes to standard error)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_cmd_rank)


def _cmd_rank(args) -> int:
    from crossling.rank import RankOptions, rank_language
    from crossling.rankrecord import ranking
    from crossling.transferability import ProbeRecipe

    options = RankOptions(data=args.data, language=args.language, models=tuple(args.models), layers=args.layers,
                          budget_seconds=args.budget_seconds, seed=args.seed, device=args.device,
                          estimator=args.estimator, bootstrap=args.bootstrap, threads=args.threads,
                          probe=ProbeRecipe(steps=args.probe_steps), compare=args.compare)
    shown = _rank_output(args)  # checked first, as --results: a bad target fails before minutes of scoring
    found = _rank_validation_table(args)
    record = rank_language(options, out=args.out, track=tqdm_track)
    places = ranking(record)
    validation = _rank_validation(record, found)
    if args.json:
        print(json.dumps(_rank_json(record, places, validation, args), ensure_ascii=False))
        return 0
    _print_ranking(record, places, shown)
    for sentence in _rank_claims(validation):
        print(sentence, file=shown)
    if found is not None and not validation:
        print(f"--results: fewer than 3 of these checkpoints have a usable run on {record.language}; nothing to compare",
              file=shown)
    return 0


def _rank_output(args):
    """Where the ranking is printed: standard error when the record itself goes to standard output
    (`--out -`, which --json cannot share). Checks the record's target (a directory is an OutputError)."""
    from crossling.atomic import TO_STDOUT, output_kind

    kind, _ = output_kind(args.out or paths.rank_record_path(args.data, args.language))
    if kind != TO_STDOUT:
        return sys.stdout
    if args.json:
        raise ConfigError("--json with --out -: both would print to standard output; "
                          "write the record to a file (--out FILE) or leave out --json")
    return sys.stderr


def _rank_claims(validation) -> list[str]:
    """Each estimator's agreement finding (Holm over the estimators when several) and its compute, then
    whether the estimators differ (not tested)."""
    if not validation:
        return []
    from crossling.rankcheck import agreement_findings, compute_sentence, estimators_finding

    stated = agreement_findings(validation, family="estimators")
    compared = estimators_finding(validation)
    lines = [line for f, a in zip(stated, validation, strict=True) for line in (f.sentence(), compute_sentence(a))]
    return lines + ([compared.sentence()] if compared else [])


def _rank_validation_table(args):
    if args.results is None:
        return None
    from crossling.results import load_table

    return load_table(args.results, args.store)


def _rank_validation(record, table) -> list:
    if table is None:
        return []
    from crossling.rankcheck import agreements

    return agreements({record.language: record}, table)


def _print_ranking(record, places, shown) -> None:
    print(f"{record.language}: {len(places)} checkpoint(s) ranked by {record.estimator} on {record.utterances} train "
          f"utterances ({record.audio_seconds:.0f} s of audio, seed {record.seed}; {record.heldout_utterances} held "
          f"out for the probe), layers: {record.layers}, on {record.device} with {record.threads} thread(s)", file=shown)
    print(f"{'rank':>4}  {'checkpoint':<22} {'score':>10} {'- best':>10} {'± paired sd':>11} {'layer':>5} {'seconds':>8}", file=shown)
    for p in places:
        print(f"{p.rank:>4}  {p.checkpoint:<22} {p.score:>10.5f} {p.gap:>10.5f} {p.gap_sd:>11.5f} {p.layer:>5} "
              f"{p.seconds:>8.1f}", file=shown)
    pairs = sorted({tuple(sorted((p.checkpoint, other))) for p in places for other in p.not_separable_from})
    if pairs:
        print(f"{record.estimator} cannot separate (paired bootstrap 95 % interval of the difference includes 0): "
              + "; ".join(f"{a} and {b}" for a, b in pairs), file=shown)
    print("'- best': the score minus the highest; '± paired sd': its sd over bootstrap resamples of utterances, "
          "drawn alike for every checkpoint (a score alone varies far more, mostly in common; --json has it)", file=shown)
    others = f"; {record.total_seconds:.1f} s with every estimator computed" if record.total_seconds > record.seconds() + 0.05 else ""
    print(f"ranking by {record.estimator} took {record.seconds():.1f} s wall ({record.sample_seconds:.1f} s reading "
          f"the sample){others}", file=shown)


def _rank_json(record, places, validation, args) -> dict:
    from dataclasses import asdict

    from crossling import paths
    from crossling.rankcheck import agreement_findings

    out = args.out or paths.rank_record_path(args.data, args.language)
    stated = agreement_findings(validation, family="estimators")
    scores = {c.checkpoint: {e.estimator: {"score": e.score, "layer": e.layer, "sd": e.sd} for e in c.estimates}
              for c in record.checkpoints}
    return {"language": record.language, "estimator": record.estimator, "record": str(out),
            "utterances": record.utterances, "audio_seconds": record.audio_seconds, "seconds": record.seconds(),
            "total_seconds": record.total_seconds,
            "ranking": [{**asdict(p), "estimators": scores[p.checkpoint]} for p in places],
            "validation": [{**_finite(asdict(a)), "finding": f.to_json()} for a, f in zip(validation, stated, strict=True)]}


def _finite(values: dict) -> dict:
    """NaN (no seed-to-seed ρ with one seed, no interval) as null: JSON has no NaN."""
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in values.items()}


# --- pretrain / zoo / demo ----------------------------------------------------------------------


def _add_pretrain(sub) -> None:
    parser = sub.add_parser("pretrain", help="self-supervised wav2vec 2.0 pre-training on prepared audio")
    parser.add_argument("--data", type=path_arg, required=True, help="prepared root (crossling prepare --out)")
    parser.add_argument("--languages", nargs="+", required=True, metavar="LANG", help="e.g. es it")
    parser.add_argument("--hours-per-language", type=float, nargs="+", default=None, metavar="H",
                        help="train hours taken from each language: one value, or one per language "
                             "(default: all prepared train audio)")
    parser.add_argument("--config", default="micro", help="micro (default), tiny, or a TOML file: architecture = name or "
                             "{Wav2Vec2Config values}, plus recipe keys (learning_rate, batch_size, ...)")
    parser.add_argument("--out", type=path_arg, required=True, help="output: model/, pretrain.json, checkpoint.pt")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (default 600)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the subset, init, masks (default 0)")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 2e-3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default: the mini-zoo's device), cuda, cuda:k or auto")
    _json_flag(parser, "the pre-training record (pretrain.json)")
    parser.set_defaults(handler=_cmd_pretrain)


def _cmd_pretrain(args) -> int:
    from crossling.pretrain import pretrain

    recipe = {"learning_rate": args.learning_rate} if args.learning_rate else None
    record = pretrain(args.data, args.languages, args.hours_per_language, config=args.config, out=args.out,
                      seed=args.seed, steps=args.steps, recipe=recipe, threads=args.threads, track=tqdm_track,
                      device=args.device)
    if args.json:
        print(json.dumps({**record, "model": str(paths.pretrain_model_dir(args.out))}, ensure_ascii=False))
        return 0
    final = record["final"]
    print(f"pre-trained {record['steps']} steps on {record['total_hours']:.3f} h "
          f"({', '.join(f'{k} {v:.3f} h' for k, v in record['hours'].items())}) in {record['wall_seconds']:.0f} s: "
          f"contrastive loss {record['initial']['contrastive_loss']:.3f} -> {final['contrastive_loss']:.3f}, "
          f"accuracy {record['initial']['accuracy']:.3f} -> {final['accuracy']:.3f}")
    print(f"model: {paths.pretrain_model_dir(args.out)}")
    return 0


def _add_zoo(sub) -> None:
    parser = sub.add_parser("zoo", help="the bundled mini-zoo: rebuild it from its recipe")
    actions = parser.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="synth -> prepare -> pretrain every model of zoo/recipe.toml")
    build.add_argument("--work", type=path_arg, default=Path("zoo-build"), help="corpus and runs (default zoo-build/)")
    build.add_argument("--out", type=path_arg, default=None, help="zoo folder to write (default: the installed zoo)")
    build.add_argument("--recipe", type=path_arg, default=None, help="recipe TOML (default: the bundled recipe)")
    build.add_argument("--workers", type=int, default=2, help="models pre-trained at once (default 2)")
    _json_flag(build, "one pre-training record per model, one JSON object a line,")
    build.set_defaults(handler=_cmd_zoo_build)


def _cmd_zoo_build(args) -> int:
    from crossling.zoo import build_zoo

    records = build_zoo(args.work, args.out, args.recipe, args.workers, track=tqdm_track)
    if args.json:
        print_json_lines(records)
        return 0
    for record in records:
        final = record.get("final", {})
        print(f"{'+'.join(record['languages']) or 'random init':<16} {record['total_hours']:6.3f} h  "
              f"accuracy {final.get('accuracy', float('nan')):.3f}")
    return 0


def _add_demo(sub) -> None:
    parser = sub.add_parser("demo", help="the offline demo study: mini-zoo x synthetic languages -> report")
    parser.add_argument("--out", type=path_arg, default=Path("crossling-demo"), help="output (default crossling-demo/)")
    parser.add_argument("--quick", action="store_true", help="a ~2-minute version for tests and CI")
    parser.add_argument("--workers", type=int, default=2,
                        help="grid processes on the demo's store, one torch thread each (default 2)")
    _json_flag(parser, "the summary (demo.json)")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    from crossling.demo import run_demo

    display = grid_display()  # the runs happen in grid processes: their logs stay in their train.log
    try:
        summary = run_demo(args.out, quick=args.quick, workers=args.workers, track=tqdm_track, progress=display)
    finally:
        display.close()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0 if summary["failed"] == 0 else 1
    languages = summary["languages"]
    print(f"{'mean test CER':<16}" + "".join(f"{lang:>10}" for lang in languages))
    for checkpoint, row in summary["mean_test_cer"].items():
        letters = summary["letters"][checkpoint]
        print(f"{checkpoint:<16}" + "".join(f"{_cer(row[lang]) + ' ' + letters[lang]:>10}" for lang in languages))
    print("(same letter on a language: no evidence of a difference; Conover-Iman, Holm, alpha 0.05)")
    for sentence in summary["headline"]:
        print(f"- {sentence}")
    print(f"{summary['done']}/{summary['runs']} runs done in {summary['wall_seconds'] / 60:.1f} min; "
          f"report: {summary['report']}")
    return 0 if summary["failed"] == 0 else 1


def _cer(value) -> str:
    return "-" if value is None else f"{value:.3f}"


# --- entry point ---------------------------------------------------------------------------------

# Every `_add_<command>` function above registers one subcommand, in the order they are defined.
_COMMANDS = [function for name, function in list(globals().items()) if name.startswith("_add_")]


def build_parser() -> argparse.ArgumentParser:
    import crossling

    parser = _Parser(
        prog="crossling",
        description="Cross-lingual transfer studies of pre-trained self-supervised speech models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {crossling.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the process exit code (2 for bad input, with the reason on stderr, or
    as a JSON object on stdout under --json)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _fail(error.parser.prog, str(error), as_json="--json" in argv, usage=error.parser.format_usage())
    _configure_logging(_log_level(args))
    try:
        return args.handler(args)
    except CrosslingError as error:
        return _fail(f"crossling {args.command}", str(error), as_json=_json_mode(args), kind=type(error).__name__)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as error:  # an OS refusal no library layer turned into an OutputError: still no traceback
        return _fail(f"crossling {args.command}", os_error_text(error), as_json=_json_mode(args), kind="OSError")


def os_error_text(error: OSError) -> str:
    """"<file>: <reason>" for an OS error (read-only file system, no space left, not a directory, ...)."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error} (errno {error.errno})"


#: Exit status of a process whose output pipe closed early, as for Unix tools killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13


def _reader_went_away() -> int:
    """The reader of our standard output stopped early (`crossling ... | head`): end quietly. Later
    writes (Python flushes stdout at exit) go to /dev/null instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def seed_arg(value: str) -> int:
    """A seed flag: an integer every RNG accepts (argparse reports a bad one and exits 2)."""
    from crossling.config import check_seed

    try:
        return check_seed(int(value), "seed")
    except (ValueError, CrosslingError) as error:
        raise argparse.ArgumentTypeError(str(error) if isinstance(error, CrosslingError) else
                                         f"a seed must be an integer, got {value!r}") from None


def path_arg(value: str) -> Path:
    return Path(value).expanduser()


def output_arg(value: str) -> Path | str:
    """An output file: a path, or '-' for standard output."""
    return value if value == "-" else path_arg(value)
