"""The `mlxllm` command line (hand-written): `train`, `generate` and `doctor`."""

from __future__ import annotations

import argparse
import ast
import codecs
import dataclasses
import inspect
import itertools
import json
import shlex
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import mlx.core as mx

from mlxllm.checkpoint import CheckpointError, latest_checkpoint, read_checkpoint, resume
from mlxllm.data import CorpusNotFoundError, cache_dir, encode_splits, load_corpus, split_train_val
from mlxllm.generate import generate, generate_stream
from mlxllm.laptop import MemorySavingConfig, MemorySavingTrainer
from mlxllm.model import GPT, GPTConfig, count_parameters
from mlxllm.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    TokenizerFileError,
    load_tokenizer,
)
from mlxllm.train import PRESETS, TrainConfig, Trainer, TrainingDiverged, preset

# The training configuration and loop that `mlxllm train` runs: the one place that names them.
RUN_CONFIG, RUN_TRAINER = MemorySavingConfig, MemorySavingTrainer

TOKENIZER_FILE = "tokenizer.txt"
BPE_VOCAB_SIZE = 1024
SAMPLE_TOKENS = 200
TEMPERATURE, TOP_K = 0.8, 200  # nanoGPT's sampling defaults
EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130
Config = typing.TypeVar("Config")


class CommandError(Exception):
    """A mistake the user can fix: printed as `mlxllm: error: ...`, without a traceback."""


def program() -> str:
    """The command as the user typed it (`.venv/bin/mlxllm`) when it can be typed again."""
    return sys.argv[0] if Path(sys.argv[0]).name == "mlxllm" else "mlxllm"


# --- configuration: presets, config files and flags -----------------------------------------

def settable_fields() -> dict[str, tuple[type, object]]:
    """Every field a flag or a config file may set: name -> (config class, field type).
    vocab_size is not one: it comes from the tokenizer."""
    settable: dict[str, tuple[type, object]] = {}
    for cls in (GPTConfig, RUN_CONFIG):
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.name != "vocab_size":
                settable[field.name] = (cls, hints[field.name])
    return settable


def field_help(cls: type) -> dict[str, str]:
    """Each field's one-line help: the string written under the field in the class or in a
    base class (the book's convention for configurations; editors show the same text)."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for statement, following in zip(body, body[1:]):
            if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                helps[statement.target.id] = " ".join(following.value.value.split())
    return helps


def defining_class(cls: type, name: str) -> type:
    """The class in cls's hierarchy that declares the field `name`."""
    return next(klass for klass in cls.__mro__ if name in vars(klass).get("__annotations__", {}))


def preset_values(name: str) -> dict[str, object]:
    """The values of every field in a preset (vocab_size is a placeholder)."""
    model, run = preset(name, vocab_size=1)
    return {**dataclasses.asdict(model),
            **dataclasses.asdict(RUN_CONFIG(**dataclasses.asdict(run)))}


def type_name(kind: object) -> str:
    """`int` for int, and a readable name for any other annotation."""
    return getattr(kind, "__name__", str(kind))


def checked_setting(name: str, value: object, source: str) -> object:
    """A config file's value for field `name`, if the field exists and the type fits."""
    settable = settable_fields()
    if name not in settable:
        hint = (" (vocab_size comes from the tokenizer: use --tokenizer bpe --vocab-size N)"
                if name == "vocab_size" else "")
        raise CommandError(f"{source}: unknown key {name!r}{hint}; valid keys: "
                           f"{', '.join(settable)}")
    kind = settable[name][1]
    if kind is float and type(value) is int:
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise CommandError(f"{source}: {name} must be {type_name(kind)}, got {value!r}; "
                       f"valid keys: {', '.join(settable)}")


def read_config_file(path: Path) -> dict[str, object]:
    """The settings in a .toml or .json file whose keys are field names."""
    if not path.is_file():
        raise CommandError(f"config file {path} does not exist")
    if path.suffix == ".json":
        parse: Callable[[str], object] = json.loads
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:
            raise CommandError("reading TOML needs Python 3.11 or newer; write the same keys "
                               "as JSON") from None
        parse = tomllib.loads
    else:
        raise CommandError(f"{path}: a config file is .toml or .json")
    try:
        settings = parse(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSON and TOML syntax errors, text that is not UTF-8
        raise CommandError(f"{path} is not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(settings, dict):
        raise CommandError(f"{path}: expected a table of field names and values")
    return {name: checked_setting(name, value, str(path)) for name, value in settings.items()}


def flag_settings(args: argparse.Namespace) -> dict[str, object]:
    """The fields given as flags on the command line (and only those)."""
    return {name: getattr(args, name) for name in settable_fields() if hasattr(args, name)}


def build(cls: type[Config], values: dict[str, object], source: str) -> Config:
    """A configuration from the entries of `values` that are its fields, checked."""
    names = {field.name for field in dataclasses.fields(cls)}
    try:
        return cls(**{key: value for key, value in values.items() if key in names})
    except (TypeError, ValueError) as error:
        raise CommandError(f"invalid configuration ({source}): {error}") from None


def build_configs(values: dict[str, object], source: str) -> tuple[GPTConfig, TrainConfig]:
    """The model and training configurations from one flat dict of field values."""
    return build(GPTConfig, values, source), build(RUN_CONFIG, values, source)


# --- tokenizers, checkpoints, models ---------------------------------------------------------

def tokenizer_kind(tokenizer: Tokenizer) -> str:
    """The --tokenizer choice that makes a tokenizer of this kind."""
    return "char" if isinstance(tokenizer, CharTokenizer) else "bpe"


def make_tokenizer(kind: str, vocab_size: int | None, text: str) -> Tokenizer:
    """char: every character of the corpus; bpe: merges learned on the training split."""
    if kind == "char":
        if vocab_size is not None:
            raise CommandError("--vocab-size is for --tokenizer bpe; the char tokenizer has "
                               "one token per character of the corpus")
        return CharTokenizer.train(text)
    train_text, _ = split_train_val(text)
    try:
        return BPETokenizer.train(train_text, vocab_size or BPE_VOCAB_SIZE)
    except ValueError as error:
        raise CommandError(f"--vocab-size: {error}") from None


def read_tokenizer(run_dir: Path) -> Tokenizer:
    """The tokenizer a run was trained with, from its run directory."""
    path = run_dir / TOKENIZER_FILE
    if not path.is_file():
        raise CommandError(f"{path} is missing: a run directory keeps the tokenizer its "
                           "checkpoints were trained with")
    try:
        return load_tokenizer(path)
    except UnicodeDecodeError:
        raise TokenizerFileError(f"{path}: not a tokenizer file (not UTF-8 text)") from None


def read_run_tokenizer(run_dir: Path, checkpoint: Path, record: dict) -> Tokenizer:
    """The run's tokenizer, after checking that the checkpoint was trained with it."""
    tokenizer = read_tokenizer(run_dir)
    if tokenizer.fingerprint() != record["tokenizer_sha256"]:
        raise CommandError(f"{run_dir / TOKENIZER_FILE} is not the tokenizer {checkpoint} was "
                           "trained with (its SHA-256 differs)")
    return tokenizer


def read_record(checkpoint: Path) -> tuple[dict, dict]:
    """(record, weights) of a checkpoint, checked whole."""
    try:
        record, weights, _ = read_checkpoint(checkpoint)
    except (KeyError, TypeError) as error:
        raise CommandError(f"{checkpoint}/state.json is damaged (at {error})") from None
    missing = [key for key in ("step", "model", "train", "tokenizer_sha256") if key not in record]
    if missing:
        raise CommandError(f"{checkpoint}/state.json is damaged: no {', '.join(missing)}")
    return record, weights


def find_checkpoint(path: Path) -> tuple[Path, Path]:
    """(checkpoint, run directory) for a run directory or one of its step-* directories."""
    if not path.is_dir():
        raise CommandError(f"{path} does not exist or is not a directory")
    if (path / "latest").is_file():
        return latest_checkpoint(path), path
    if (path / "state.json").is_file():
        return path, path.parent
    raise CommandError(f"{path} is neither a run directory (no file 'latest') nor a "
                       "checkpoint directory (no state.json)")


def load_model(checkpoint: Path) -> tuple[GPT, Tokenizer]:
    """The trained model of a checkpoint and the tokenizer it was trained with."""
    checkpoint, run_dir = find_checkpoint(checkpoint)
    record, weights = read_record(checkpoint)
    tokenizer = read_run_tokenizer(run_dir, checkpoint, record)
    model = GPT(build(GPTConfig, record["model"], f"{checkpoint}/state.json"))
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as error:
        first_line = str(error).splitlines()[0].rstrip(": ")
        raise CommandError(f"{checkpoint}: the weights do not fit the model that state.json "
                           f"describes ({first_line})") from None
    return model, tokenizer


# --- mlxllm train ------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """What a training run starts from: tokenizer, configurations, and a checkpoint to resume."""

    tokenizer: Tokenizer
    model_config: GPTConfig
    train_config: TrainConfig
    checkpoint: Path | None = None


def refuse_existing_run(run_dir: Path) -> None:
    """A run directory is never reused without --resume: that would overwrite a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise CommandError(f"--run-dir {run_dir} is a file, not a directory")
    if (run_dir / "latest").exists() or any(run_dir.glob("step-*")):
        raise CommandError(f"{run_dir} already holds a run; continue it with `"
                           f"{shlex.join([program(), 'train', '--run-dir', str(run_dir)])} "
                           "--resume`, or give another --run-dir")


def new_run(args: argparse.Namespace, run_dir: Path, settings: dict[str, object],
            text: str) -> Run:
    """A fresh run: preset < config file < flags; the tokenizer is saved in the run dir."""
    refuse_existing_run(run_dir)
    tokenizer = make_tokenizer(args.tokenizer or "char", args.vocab_size, text)
    values = {**preset_values(args.preset), **settings, "vocab_size": tokenizer.vocab_size}
    model_config, train_config = build_configs(values, f"preset {args.preset} with your settings")
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    return Run(tokenizer, model_config, train_config)


def resumed_run(args: argparse.Namespace, run_dir: Path, settings: dict[str, object]) -> Run:
    """The run in run_dir, with the configuration its latest checkpoint holds."""
    if not run_dir.is_dir():
        raise CommandError(f"--resume: {run_dir} does not exist; give the --run-dir of the run")
    checkpoint = latest_checkpoint(run_dir)
    record, _ = read_record(checkpoint)
    tokenizer = read_run_tokenizer(run_dir, checkpoint, record)
    saved = {**record["model"], **record["train"], "tokenizer": tokenizer_kind(tokenizer)}
    given = dict(settings, tokenizer=args.tokenizer)
    if args.vocab_size is not None:
        given["vocab_size"] = args.vocab_size
    contradictions = [f"{name}: {saved.get(name)!r} in the checkpoint, {value!r} given"
                      for name, value in given.items()
                      if value is not None and saved.get(name) != value]
    if contradictions:
        raise CommandError(f"--resume continues with the configuration stored in {checkpoint}, "
                           f"and your settings contradict it ({'; '.join(contradictions)}); "
                           "drop them, or start a new run in another --run-dir")
    model_config, train_config = build_configs(saved, f"{checkpoint}/state.json")
    return Run(tokenizer, model_config, train_config, checkpoint)


def clear_status_line() -> None:
    """Erase the progress bar a terminal shows, so a log line starts on a clean line."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def evaluation_log(model: GPT, tokenizer: Tokenizer, sample_tokens: int) -> Callable[[str], None]:
    """The Trainer's log: each evaluation line, then a short sample of the model as it is now
    (generate() puts the model back in training mode)."""
    prompt = tokenizer.encode("\n")

    def log(line: str) -> None:
        clear_status_line()
        print(line, flush=True)
        if sample_tokens:
            ids = generate(model, prompt, sample_tokens, TEMPERATURE, TOP_K, seed=0)
            text = tokenizer.decode(ids[len(prompt):]).strip("\n")
            print(textwrap.indent(text, "    | ", lambda _: True), flush=True)

    return log


def describe(run: Run, trainer: Trainer, train_tokens: int, val_tokens: int) -> str:
    """A few lines on what is about to train."""
    model, config = run.model_config, run.train_config
    start = f"resuming at step {trainer.step:,} of" if run.checkpoint else "a new run of"
    return (f"{trainer.run_dir}: {start} {config.steps:,} steps, {config.batch_size} x "
            f"{model.context} tokens each\nmodel: {count_parameters(model):,} parameters "
            f"(n_layer {model.n_layer}, n_head {model.n_head}, n_embd {model.n_embd})\n"
            f"data: {tokenizer_kind(run.tokenizer)} tokens (vocabulary {model.vocab_size}), "
            f"{train_tokens:,} for training, {val_tokens:,} for evaluation")


def continue_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The exact command line that resumes this run."""
    words = [program(), "train", "--run-dir", str(run_dir), "--resume"]
    if args.eval_tokens is not None:
        words += ["--eval-tokens", str(args.eval_tokens)]
    if args.sample_tokens != SAMPLE_TOKENS:
        words += ["--sample-tokens", str(args.sample_tokens)]
    return shlex.join(words)


def report_interrupt(args: argparse.Namespace, run_dir: Path) -> int:
    """After Ctrl-C: where the run was saved and how to go on."""
    clear_status_line()
    try:
        checkpoint = latest_checkpoint(run_dir)
    except CheckpointError:
        print("\nmlxllm: interrupted before the first checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"\nmlxllm: interrupted; checkpoint saved in {checkpoint}\n"
          f"continue with: {continue_command(args, run_dir)}", file=sys.stderr)
    return EXIT_INTERRUPTED


def report_divergence(error: TrainingDiverged, run_dir: Path, config: TrainConfig) -> int:
    """After a loss or weight that is not finite: what was kept, and what to try instead."""
    clear_status_line()
    try:
        kept = (f"{latest_checkpoint(run_dir)} is kept as latest (its numbers are all finite; "
                "nothing after it was saved)")
    except CheckpointError:
        kept = "no checkpoint was saved before it"
    print(f"\nmlxllm: the run diverged at {error}; {kept}.\n"
          f"Start again in a new --run-dir with a lower --learning-rate (this run: "
          f"{config.learning_rate:g}), a longer --warmup-steps ({config.warmup_steps}) or a "
          f"smaller --grad-clip ({config.grad_clip:g}); chapter 7 of the book explains each "
          "of them.", file=sys.stderr)
    return EXIT_DIVERGED


def train_command(args: argparse.Namespace) -> int:
    """Train a GPT on Tiny Shakespeare into a run directory, or resume one."""
    run_dir = args.run_dir or Path("runs") / args.preset
    settings = {**(read_config_file(args.config) if args.config else {}), **flag_settings(args)}
    text = load_corpus()
    if args.resume:
        run = resumed_run(args, run_dir, settings)
    else:
        run = new_run(args, run_dir, settings, text)
    train_ids, all_val_ids = encode_splits(run.tokenizer, text, cache_dir() / "tokens")
    val_ids = all_val_ids[:args.eval_tokens]
    if len(val_ids) <= run.model_config.context:
        raise CommandError(f"{len(val_ids)} validation tokens do not fill one window of "
                           f"context {run.model_config.context}; raise --eval-tokens")
    chars_per_token = len(split_train_val(text)[1]) / len(all_val_ids)
    mx.random.seed(run.train_config.seed)
    model = GPT(run.model_config)
    try:
        trainer = RUN_TRAINER(model, run.train_config, train_ids, val_ids, chars_per_token,
                              run.tokenizer.fingerprint(), run_dir=run_dir, progress=True,
                              log=evaluation_log(model, run.tokenizer, args.sample_tokens))
    except ValueError as error:
        raise CommandError(f"cannot train this configuration: {error}") from None
    if run.checkpoint is not None:
        resume(trainer, run.checkpoint)
    print(describe(run, trainer, len(train_ids), len(val_ids)), flush=True)
    try:
        trainer.run()
    except KeyboardInterrupt:
        return report_interrupt(args, run_dir)
    except TrainingDiverged as error:
        return report_divergence(error, run_dir, run.train_config)
    print(f"done: {latest_checkpoint(run_dir)}\ntry it: "
          f"{shlex.join([program(), 'generate', '--checkpoint', str(run_dir)])} "
          "--prompt 'ROMEO:'")
    return 0


# --- mlxllm generate ---------------------------------------------------------------------------

def stream_text(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """The text of `ids` as they come, in pieces of whole characters: the first bytes of a
    character that a token splits wait for the token that completes it. The pieces join to
    tokenizer.decode(ids)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in ids:
        if text := decoder.decode(tokenizer.pieces[token]):
            yield text
    if text := decoder.decode(b"", final=True):
        yield text


def generate_command(args: argparse.Namespace) -> int:
    """Continue a prompt with a trained model, printing the text as it is drawn; Ctrl-C keeps
    what was printed."""
    model, tokenizer = load_model(args.checkpoint)
    try:
        prompt = tokenizer.encode(args.prompt)
    except ValueError as error:
        raise CommandError(f"--prompt: {error}") from None
    if not prompt:
        raise CommandError("--prompt is empty; give at least one character")
    stream = generate_stream(model, prompt, args.tokens, args.temperature, args.top_k, args.seed)
    try:
        for text in stream_text(tokenizer, itertools.chain(prompt, stream)):
            print(text, end="", flush=True)
    except KeyboardInterrupt:
        print(flush=True)
        print("mlxllm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    return 0


# --- mlxllm doctor -----------------------------------------------------------------------------

def doctor(args: argparse.Namespace) -> int:
    """Print the platform, MLX set-up, BLAS in use and a measured matmul speed."""
    from mlxllm.hardware import describe_machine, matmul_gflops

    facts = describe_machine()
    facts["f32 matmul"] = f"{matmul_gflops(args.size):.1f} GFLOP/s at n={args.size}"
    width = max(map(len, facts))
    for name, value in facts.items():
        print(f"{name:<{width}}  {value}")
    if "reference BLAS" in facts["BLAS"]:
        print("\nMatrix products are slow here: install the system OpenBLAS "
              "(Debian/Ubuntu: apt-get install libopenblas0-pthread).")
    return 0


# --- the parser --------------------------------------------------------------------------------

def bounded(kind: type, low: float) -> Callable[[str], object]:
    """An argparse type: a number of `kind` that is at least `low`."""
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value

    return parse


def preset_help(name: str, presets: dict[str, dict[str, object]]) -> str:
    """`Presets: baby 2000, full 5000.` for field `name`, or `Every preset: 0.1.`"""
    values = {preset_name: settings[name] for preset_name, settings in presets.items()}
    if len({repr(value) for value in values.values()}) == 1:
        return f"Every preset: {next(iter(values.values()))}."
    return "Presets: " + ", ".join(f"{preset_name} {value}"
                                   for preset_name, value in values.items()) + "."


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settable field (--n-layer, --compile/--no-compile, ...), grouped by the
    class that declares it; the help says what the field means and gives the presets' values."""
    presets = {name: preset_values(name) for name in PRESETS}
    helps = {**field_help(GPTConfig), **field_help(RUN_CONFIG)}
    groups: dict[type, argparse._ArgumentGroup] = {}
    for name, (cls, kind) in settable_fields().items():
        owner = defining_class(cls, name)
        if owner not in groups:
            groups[owner] = parser.add_argument_group(
                f"{owner.__name__} fields (override the preset and --config)",
                " ".join((owner.__doc__ or "").split()))
        text = f"{helps.get(name, '')} {preset_help(name, presets)}"
        options: dict[str, object] = {"dest": name, "default": argparse.SUPPRESS,
                                      "help": text.replace("%", "%%")}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float, str):
            options.update(type=kind, metavar=type_name(kind).upper())
        else:
            raise TypeError(f"no flag for {cls.__name__}.{name} of type {kind}")
        groups[owner].add_argument("--" + name.replace("_", "-"), **options)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """`mlxllm train` and its options."""
    command = commands.add_parser(
        "train", allow_abbrev=False, help="train a GPT on Tiny Shakespeare (Ctrl-C saves)",
        description="Train a GPT on Tiny Shakespeare. Settings come from the preset, then "
        "--config, then the flags. The run directory keeps tokenizer.txt and a checkpoint "
        "(step-NNNNNNN/) every checkpoint_every steps; Ctrl-C finishes the step, saves and "
        "prints the command that continues the run.")
    command.add_argument("--preset", choices=PRESETS, default="baby",
                         help="baby: a small model for a laptop's CPU; full: nanoGPT's "
                         "Shakespeare model, for a Mac's GPU (default baby)")
    command.add_argument("--config", type=Path, metavar="FILE",
                         help="a .toml or .json file of field = value, for the fields below")
    command.add_argument("--tokenizer", choices=("char", "bpe"),
                         help="char: one token per character (default); bpe: byte pairs "
                         "learned on the training split")
    command.add_argument("--vocab-size", type=bounded(int, 256), metavar="N",
                         help=f"vocabulary of the bpe tokenizer (default {BPE_VOCAB_SIZE})")
    command.add_argument("--run-dir", type=Path, metavar="DIR",
                         help="where the tokenizer and checkpoints go (default runs/PRESET); "
                         "never overwritten")
    command.add_argument("--resume", action="store_true",
                         help="continue the run in --run-dir from its latest checkpoint, with "
                         "the configuration stored there")
    command.add_argument("--eval-tokens", type=bounded(int, 2), metavar="N",
                         help="evaluate on the first N validation tokens only (default: all "
                         "of the last 10%% of the text): faster, noisier; not stored in the run")
    command.add_argument("--sample-tokens", type=bounded(int, 0), default=SAMPLE_TOKENS,
                         metavar="N", help="length of the sample printed at each evaluation "
                         f"(default {SAMPLE_TOKENS}; 0: none)")
    add_config_flags(command)
    command.set_defaults(run=train_command)


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """`mlxllm generate` and its options."""
    command = commands.add_parser(
        "generate", allow_abbrev=False, help="continue a prompt with a trained model",
        description="Continue a prompt with the model of a checkpoint and print the text.")
    command.add_argument("--checkpoint", type=Path, required=True, metavar="DIR",
                         help="a run directory (its latest checkpoint) or one step-* directory")
    command.add_argument("--prompt", default="\n",
                         help="the text to continue (default: a line break)")
    command.add_argument("--tokens", type=bounded(int, 0), default=500, metavar="N",
                         help="how many tokens to add (default 500)")
    command.add_argument("--temperature", type=bounded(float, 0), default=TEMPERATURE,
                         metavar="T", help=f"0: always the likeliest token; higher: more "
                         f"adventurous (default {TEMPERATURE})")
    command.add_argument("--top-k", type=bounded(int, 1), default=TOP_K, metavar="K",
                         help=f"draw from the K likeliest tokens only (default {TOP_K})")
    command.add_argument("--seed", type=int, default=0, help="same seed, same text (default 0)")
    command.set_defaults(run=generate_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxllm", description="The library of 'Build a Large Language Model from "
        "Scratch, with MLX'.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_command(commands)
    add_generate_command(commands)
    check = commands.add_parser("doctor", help="check this machine's MLX set-up")
    check.add_argument("--size", type=int, default=1024,
                       help="matrix size n of the timed n×n product (default 1024)")
    check.set_defaults(run=doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, CheckpointError, TokenizerFileError,
            CorpusNotFoundError) as error:
        print(f"mlxllm: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nmlxllm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
