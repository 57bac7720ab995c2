"""The `mlxllm` command line (hand-written): `train`, `generate`, `eval`, `diagnose` and
`doctor`."""

from __future__ import annotations

import argparse
import ast
import codecs
import dataclasses
import fcntl
import inspect
import itertools
import json
import math
import os
import re
import shlex
import signal
import struct
import sys
import textwrap
import time
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import mlx.core as mx

from mlxllm.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    read_checkpoint,
    remove_stale_partials,
    resume,
)
from mlxllm.data import (
    CORPUS_URL,
    CorpusNotFoundError,
    cache_dir,
    encode_splits,
    load_corpus,
    read_verified,
    search_dirs,
    split_train_val,
)
from mlxllm.generate import (
    Sampler,
    SpeculationStats,
    check_draft,
    generate,
    generate_tokens,
    speculative_tokens,
)
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
LOCK_FILE = ".lock"
DEFAULT_PRESET = "baby"
KEEP = 3  # checkpoints kept in a run directory, by default
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
    for name, value in values.items():
        if name in names and isinstance(value, float) and not math.isfinite(value):
            raise CommandError(f"invalid configuration ({source}): {name} must be a finite "
                               f"number, got {value}")
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
    """(record, weights) of a checkpoint, checked; the optimizer file, which only resuming
    reads, is left to resume() to check."""
    try:
        record, weights, _ = read_checkpoint(checkpoint, optimizer=False)
    except (KeyError, TypeError) as error:
        raise CommandError(f"{checkpoint}/state.json is damaged (at {error})") from None
    missing = [key for key in ("step", "model", "train", "tokenizer_sha256") if key not in record]
    if missing:
        raise CommandError(f"{checkpoint}/state.json is damaged: no {', '.join(missing)}")
    for key in ("model", "train"):
        if not isinstance(record[key], dict):
            raise CommandError(f"{checkpoint}/state.json is damaged: {key} is not a JSON object")
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
    """The trained model of a checkpoint, in evaluation mode (no dropout), and the tokenizer
    it was trained with."""
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
    model.eval()
    return model, tokenizer


# --- MLX's compile cache ----------------------------------------------------------------------

def compile_cache_dir() -> Path:
    """Where MLX keeps the CPU kernels that mx.compile builds: <temp>/mlx/<version>/cpu, with
    <temp> found as C++'s std::filesystem::temp_directory_path finds it."""
    temp = next((os.environ[name] for name in ("TMPDIR", "TMP", "TEMP", "TEMPDIR")
                 if os.environ.get(name)), "/tmp")
    return Path(temp) / "mlx" / mx.__version__ / "cpu"


def kernel_problem(path: Path) -> str | None:
    """Why a compiled kernel cannot load (empty, cut short, not a library), or None. A compiler
    stopped by Ctrl-C leaves such a file, and MLX loads it again every time, and fails."""
    size = path.stat().st_size
    with path.open("rb") as file:
        header = file.read(64)
    if not header:
        return "empty"
    if header[:4] in (b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):  # Mach-O, Mach-O universal
        return None
    if header[:4] != b"\x7fELF":
        return "not a shared library"
    if len(header) < 64:
        return "truncated"
    if header[4:6] != b"\x02\x01":  # not 64-bit little-endian: not checked further
        return None
    (table,) = struct.unpack_from("<Q", header, 0x28)  # the section headers, which end the file
    entry_size, entries = struct.unpack_from("<HH", header, 0x3A)
    end = table + entry_size * entries
    return f"truncated: {size:,} of {end:,} bytes" if size < end else None


def broken_kernels(directory: Path) -> dict[Path, str]:
    """The entries of a compile cache directory that cannot load, and why."""
    broken = {}
    for path in sorted(directory.glob("lib*.so")):
        try:
            problem = kernel_problem(path)
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        except OSError as error:
            problem = f"unreadable: {error.strerror}"
        if problem is not None:
            broken[path] = problem
    return broken


def repair_compile_cache() -> None:
    """Remove the broken entries of MLX's compile cache, so that MLX builds them again."""
    for path, problem in broken_kernels(compile_cache_dir()).items():
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            print(f"mlxllm: MLX's compile cache holds a broken kernel, {path} ({problem}), that "
                  f"cannot be removed ({error.strerror}): delete it (rm {shlex.quote(str(path))})",
                  file=sys.stderr)
            continue
        print(f"mlxllm: removed a broken entry of MLX's compile cache: {path} ({problem}); MLX "
              "compiles it again", file=sys.stderr)


def kernel_error(error: RuntimeError) -> str | None:
    """What to do when MLX cannot load a compiled kernel; None for any other error."""
    found = re.match(r"Could not load C\+\+ shared library (.+?): (.+)", str(error))
    if found is None:
        return None
    path, reason = found.groups()
    advice = (f"delete it (rm {shlex.quote(path)}) and run again" if Path(path).exists()
              else "its compiler was stopped; run again")
    return (f"MLX could not load {path} from its compile cache ({reason}): {advice}; "
            "`mlxllm doctor` checks the whole cache")


# --- mlxllm train ------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """What a training run starts from: tokenizer, configurations, and a checkpoint to resume."""

    tokenizer: Tokenizer
    model_config: GPTConfig
    train_config: TrainConfig
    checkpoint: Path | None = None


class RunDirLock:
    """One trainer at a time in a run directory: an exclusive lock on RUN_DIR/.lock, a file
    that names the holder's pid. The system drops the lock when its process ends, however it
    ends, so the lock file a killed trainer leaves behind is simply taken over."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.path = run_dir, run_dir / LOCK_FILE
        self.file: typing.TextIO | None = None

    def __enter__(self) -> RunDirLock:
        while self.file is None:
            file = self.path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                file.close()
                raise CommandError(
                    f"{self.run_dir} is in use by another trainer (pid {holder}); wait for it "
                    f"to finish, stop it (Ctrl-C in its terminal, or kill -INT {holder}), or "
                    "give another --run-dir") from None
            if self.locks_the_file_named(file):
                self.file = file
            else:  # its holder removed the file while letting go: lock the new one
                file.close()
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def locks_the_file_named(self, file: typing.TextIO) -> bool:
        """Whether `file` is still the file at self.path."""
        try:
            return os.path.samestat(os.fstat(file.fileno()), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc_info: object) -> None:
        if self.file is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()
            self.file = None


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
    """A fresh run: preset < config file < flags; nothing is written yet."""
    refuse_existing_run(run_dir)
    tokenizer = make_tokenizer(args.tokenizer or "char", args.vocab_size, text)
    name = args.preset or DEFAULT_PRESET
    values = {**preset_values(name), **settings, "vocab_size": tokenizer.vocab_size}
    model_config, train_config = build_configs(values, f"preset {name} with your settings")
    return Run(tokenizer, model_config, train_config)


def check_resumable(run_dir: Path) -> None:
    """--resume needs the directory of a run."""
    if run_dir.is_file():
        raise CommandError(f"--resume: {run_dir} is a file, not a run directory; give the "
                           "--run-dir of the run")
    if not run_dir.is_dir():
        raise CommandError(f"--resume: {run_dir} does not exist; give the --run-dir of the run")


def resumed_run(args: argparse.Namespace, run_dir: Path, settings: dict[str, object]) -> Run:
    """The run in run_dir, with the configuration its latest checkpoint holds."""
    checkpoint = latest_checkpoint(run_dir)
    if args.preset is not None and args.run_dir is not None:  # else it named the run dir
        print(f"mlxllm: note: --preset {args.preset} is not applied with --resume; the run "
              f"continues with the configuration stored in {checkpoint}", file=sys.stderr)
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


def describe(run: Run, trainer: Trainer, train_tokens: int, val_tokens: int,
             processes: int = 1) -> str:
    """A few lines on what is about to train."""
    model, config = run.model_config, run.train_config
    start = f"resuming at step {trainer.step:,} of" if run.checkpoint else "a new run of"
    return (f"{trainer.run_dir}: {start} {config.steps:,} steps, {config.batch_size} x "
            f"{model.context} tokens each\nmodel: {count_parameters(model):,} parameters "
            f"(n_layer {model.n_layer}, n_head {model.n_head}, n_embd {model.n_embd})\n"
            f"data: {tokenizer_kind(run.tokenizer)} tokens (vocabulary {model.vocab_size}), "
            f"{train_tokens:,} for training, {val_tokens:,} for evaluation"
            + (f"\ndata parallel: {processes} processes, each {config.batch_size // processes} "
               f"of the {config.batch_size} windows of a step" if processes > 1 else ""))


def continue_command(args: argparse.Namespace, run_dir: Path) -> str:
    """The exact command line that resumes this run."""
    words = [program(), "train", "--run-dir", str(run_dir), "--resume"]
    if (processes := mx.distributed.init().size()) > 1:
        words += ["--processes", str(processes)]
    if args.eval_tokens is not None:
        words += ["--eval-tokens", str(args.eval_tokens)]
    if args.sample_tokens != SAMPLE_TOKENS:
        words += ["--sample-tokens", str(args.sample_tokens)]
    if args.keep != KEEP:
        words += ["--keep", str(args.keep)]
    return shlex.join(words)


def report_interrupt(args: argparse.Namespace, run_dir: Path, step: int, first_step: int) -> int:
    """After Ctrl-C at `step` of a run that started at `first_step`: what was saved (after a
    second Ctrl-C, the checkpoint `latest` names is an older one) and how to go on."""
    clear_status_line()
    try:
        checkpoint: Path | None = latest_checkpoint(run_dir)
    except CheckpointError:
        checkpoint = None
    saved = checkpoint is not None and checkpoint.name == f"step-{step:07d}"
    if step == first_step:
        said = "interrupted before the first step; nothing to save"
    elif saved:
        said = f"interrupted; checkpoint saved in {checkpoint}"
    else:
        said = f"interrupted after step {step}, before its checkpoint was saved"
    if checkpoint is None:
        print(f"\nmlxllm: {said}", file=sys.stderr)
        return EXIT_INTERRUPTED
    last = "" if saved else f"; the last checkpoint is {checkpoint}"
    print(f"\nmlxllm: {said}{last}\ncontinue with: {continue_command(args, run_dir)}",
          file=sys.stderr)
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
          f"of them, and {shlex.join([program(), 'diagnose', str(run_dir)])} shows what the "
          "run recorded.", file=sys.stderr)
    return EXIT_DIVERGED


def without_processes(argv: list[str]) -> list[str]:
    """The command line with its --processes option taken out."""
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--processes":
            skip = True
        elif not word.startswith("--processes="):
            kept.append(word)
    return kept


def launch_processes(args: argparse.Namespace) -> int:
    """`mlxllm train --processes N`: the same command as N processes under mlx.launch."""
    from mlxllm.distributed import launch

    command = [sys.executable, "-m", "mlxllm.cli", *without_processes(args.argv)]
    try:
        return launch(command, args.processes, capture=False, check=False).returncode
    except RuntimeError as error:  # no ports are free
        raise CommandError(str(error)) from None


def train_command(args: argparse.Namespace) -> int:
    """Train a GPT on Tiny Shakespeare into a run directory, or resume one; one trainer at a
    time in a run directory (RunDirLock). Under mlx.launch, every process trains its share
    and rank 0 alone writes (chapter 12)."""
    group = mx.distributed.init()
    if group.size() == 1 and (args.processes or 1) > 1:
        return launch_processes(args)
    if group.size() > 1 and args.processes not in (None, group.size()):
        raise CommandError(f"--processes {args.processes} was given to one of "
                           f"{group.size()} processes that mlx.launch started; drop it")
    run_dir = args.run_dir or Path("runs") / (args.preset or DEFAULT_PRESET)
    settings = {**(read_config_file(args.config) if args.config else {}), **flag_settings(args)}
    text = load_corpus()
    if group.rank() != 0:  # rank 0 checks, locks and writes; the others only train
        run = resumed_run(args, run_dir, settings) if args.resume else new_run(
            args, run_dir, settings, text)
        return run_training(args, run_dir, run, text, group)
    if args.resume:
        check_resumable(run_dir)
        with RunDirLock(run_dir):
            return run_training(args, run_dir, resumed_run(args, run_dir, settings), text,
                                group)
    run = new_run(args, run_dir, settings, text)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunDirLock(run_dir):
        refuse_existing_run(run_dir)  # again: a trainer that held the lock may have made one
        run.tokenizer.save(run_dir / TOKENIZER_FILE)
        return run_training(args, run_dir, run, text, group)


def seeded_model(run: Run) -> GPT:
    """The run's model, initialised from its seed: the same weights in every process."""
    mx.random.seed(run.train_config.seed)
    return GPT(run.model_config)


def make_trainer(run: Run, model: GPT, text: str, eval_tokens: int | None,
                 group: mx.distributed.Group, **options: typing.Any) -> tuple[Trainer,
                                                                           tuple[int, int]]:
    """The trainer of `run` for this process (data-parallel in a group of several), resumed
    from the run's checkpoint if it has one; and its numbers of training and validation
    tokens."""
    train_ids, all_val_ids = encode_splits(run.tokenizer, text, cache_dir() / "tokens")
    val_ids = all_val_ids[:eval_tokens]
    if len(val_ids) <= run.model_config.context:
        raise CommandError(f"{len(val_ids)} validation tokens do not fill one window of "
                           f"context {run.model_config.context}; raise --eval-tokens")
    chars_per_token = len(split_train_val(text)[1]) / len(all_val_ids)
    if group.size() > 1:
        from mlxllm.distributed import DataParallelTrainer

        options["group"] = group
        trainer_class: type[Trainer] = DataParallelTrainer
    else:
        trainer_class = RUN_TRAINER
    try:
        trainer = trainer_class(model, run.train_config, train_ids, val_ids, chars_per_token,
                                run.tokenizer.fingerprint(), **options)
    except ValueError as error:
        raise CommandError(f"cannot train this configuration: {error}") from None
    if run.checkpoint is not None:
        resume(trainer, run.checkpoint)
    return trainer, (len(train_ids), len(val_ids))


def run_quietly(run: Run, text: str, eval_tokens: int | None,
                group: mx.distributed.Group) -> int:
    """A rank other than 0 of a data-parallel run: the same steps, no output, no files."""
    trainer, _ = make_trainer(run, seeded_model(run), text, eval_tokens, group)
    try:
        trainer.run()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except TrainingDiverged:  # every rank sees the same averaged loss; rank 0 reports it
        return EXIT_DIVERGED
    return 0


def run_training(args: argparse.Namespace, run_dir: Path, run: Run, text: str,
                 group: mx.distributed.Group) -> int:
    """Train `run` in run_dir, which rank 0 has locked, after clearing what killed processes
    left: broken kernels in MLX's compile cache, unfinished checkpoints. The other ranks of a
    data-parallel run train silently and write nothing."""
    if group.rank() != 0:
        return run_quietly(run, text, args.eval_tokens, group)
    repair_compile_cache()
    for partial in remove_stale_partials(run_dir):
        print(f"mlxllm: removed {partial.name}, left by a process that was killed while saving",
              file=sys.stderr)
    model = seeded_model(run)
    trainer, data = make_trainer(run, model, text, args.eval_tokens, group, run_dir=run_dir,
                                 progress=True, keep=args.keep or None,
                                 log=evaluation_log(model, run.tokenizer, args.sample_tokens))
    print(describe(run, trainer, *data, group.size()), flush=True)
    first_step = trainer.step
    try:
        trainer.run()
    except KeyboardInterrupt:
        repair_compile_cache()  # Ctrl-C in the first step may have cut a kernel short
        return report_interrupt(args, run_dir, trainer.step, first_step)
    except TrainingDiverged as error:
        from mlxllm.diagnose import record_failure

        record_failure(trainer, error)
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


def make_sampler(args: argparse.Namespace) -> Sampler:
    """The Sampler the generate options describe; a bad combination is a CommandError."""
    try:
        return Sampler(args.temperature, args.top_k, args.top_p, args.min_p,
                       args.repetition_penalty)
    except ValueError as error:
        message = str(error)
        for name in ("top_k", "top_p", "min_p", "repetition_penalty", "temperature"):
            message = message.replace(name, "--" + name.replace("_", "-"))
        raise CommandError(message) from None


def load_draft(path: Path, model: GPT, tokenizer: Tokenizer) -> GPT:
    """The draft model of checkpoint `path`, checked against the model it drafts for."""
    try:
        draft, draft_tokenizer = load_model(path)
    except CommandError as error:
        raise CommandError(f"--draft: {error}") from None
    if draft_tokenizer.fingerprint() != tokenizer.fingerprint():
        raise CommandError(f"--draft {path} was trained with another tokenizer than "
                           "--checkpoint; a draft model must share the model's tokenizer")
    try:
        check_draft(model, draft, 1, model.config.context)
    except ValueError as error:
        raise CommandError(f"--draft {path}: {error}") from None
    return draft


def generate_command(args: argparse.Namespace) -> int:
    """Continue a prompt with a trained model, printing the text as it is drawn, and how fast
    on stderr; Ctrl-C keeps what was printed."""
    # Ctrl-C raises KeyboardInterrupt even if this process was started with SIGINT ignored,
    # as a shell does for a job it starts in the background without job control.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    model, tokenizer = load_model(args.checkpoint)
    sampler = make_sampler(args)
    draft = None if args.draft is None else load_draft(args.draft, model, tokenizer)
    try:
        prompt = tokenizer.encode(args.prompt)
    except ValueError as error:
        raise CommandError(f"--prompt: {error}") from None
    if not prompt:
        raise CommandError("--prompt is empty; give at least one character")
    for sample in range(args.num_samples):
        seed = args.seed + sample
        if args.num_samples > 1:
            print(f"--- sample {sample + 1} of {args.num_samples} (seed {seed})", flush=True)
        stats = SpeculationStats()
        if draft is None:
            stream = generate_tokens(model, prompt, args.tokens, sampler=sampler, seed=seed)
        else:
            stream = speculative_tokens(model, draft, prompt, args.tokens, sampler=sampler,
                                        draft_tokens=args.draft_tokens, seed=seed, stats=stats)
        began = time.perf_counter()
        try:
            for text in stream_text(tokenizer, itertools.chain(prompt, stream)):
                print(text, end="", flush=True)
        except KeyboardInterrupt:
            print(flush=True)
            print("mlxllm: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(flush=True)
        print(speed_line(args.tokens, time.perf_counter() - began, stats), file=sys.stderr)
    return 0


def speed_line(tokens: int, seconds: float, stats: SpeculationStats) -> str:
    """`mlxllm: 500 tokens in 2.1 s, 238 tokens/s`, and what a draft had kept."""
    rate = tokens / max(seconds, 1e-9)
    line = f"mlxllm: {tokens:,} tokens in {seconds:.1f} s, {rate:,.0f} tokens/s"
    if stats.drafted:
        line += (f"; the draft's tokens kept: {stats.accepted:,} of {stats.drafted:,} "
                 f"({stats.accepted / stats.drafted:.0%})")
    return line


# --- mlxllm eval -------------------------------------------------------------------------------

def read_text_file(path: Path) -> str:
    """The UTF-8 text of a file the user named with --text."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"--text {path} does not exist") from None
    except IsADirectoryError:
        raise CommandError(f"--text {path} is a directory; give a text file") from None
    except UnicodeDecodeError as error:
        raise CommandError(f"--text {path} is not UTF-8 text ({error.reason} at byte "
                           f"{error.start})") from None


def eval_command(args: argparse.Namespace) -> int:
    """Score a checkpoint on a text (default: the corpus's validation split) in nats and bits
    per character with a 95% interval, beside the baselines fitted on the training split."""
    from mlxllm.evaluate import baselines, score_text

    model, tokenizer = load_model(args.checkpoint)
    train_text, val_text = split_train_val(load_corpus())
    text, name = val_text, "the validation split of Tiny Shakespeare"
    if args.text is not None:
        text, name = read_text_file(args.text), str(args.text)
    began = time.perf_counter()
    try:
        estimate = score_text(model, tokenizer, text, seed=args.seed)
    except ValueError as error:  # a character it cannot encode, a text shorter than a window
        raise CommandError(f"{name}: {error}") from None
    seconds = time.perf_counter() - began
    per_token = estimate.nats_per_char * estimate.chars / estimate.tokens
    print(f"text      {name} ({len(text):,} characters)")
    print(f"scored    {estimate.chars:,} characters, {estimate.tokens:,} tokens, in whole "
          f"windows of {model.config.context} tokens")
    print(f"loss      {estimate.nats_per_char:.4f} nats/char (95% interval "
          f"{estimate.low:.4f} to {estimate.high:.4f}), {estimate.bits_per_char:.4f} bits/char")
    print(f"          perplexity {math.exp(per_token):.2f} per token, "
          f"{estimate.chars / estimate.tokens:.2f} characters per token; {seconds:.1f} s")
    if args.max_order == 0:
        return 0
    try:
        scores = baselines(train_text, text, args.max_order)
    except ValueError as error:
        print(f"baselines skipped: {error}")
        return 0
    print(f"baselines, fitted on the training split (nats/char, n-grams to order "
          f"{args.max_order}):")
    rows = {**scores, "(this model)": estimate.nats_per_char}
    for baseline, value in sorted(rows.items(), key=lambda item: -item[1]):
        print(f"  {baseline:<14}{value:.4f}")
    return 0


# --- mlxllm diagnose ---------------------------------------------------------------------------

EXIT_FOUND = 1  # diagnose: the run shows a problem (like a linter's findings)


def diagnose_command(args: argparse.Namespace) -> int:
    """Read what runs recorded (losses, learning rates, gradient norms, validation, a failure)
    and say what looks wrong in each, with the fix and chapter 11's section; optionally draw
    their curves."""
    from mlxllm.diagnose import diagnose, plot_runs, read_run, report

    if args.plot is not None and args.plot.suffix.lower() not in PLOT_SUFFIXES:
        raise CommandError(f"--plot {args.plot}: name a .png, .pdf or .svg file")
    runs = {str(run_dir): read_run(run_dir) for run_dir in args.run_dirs}
    for index, (name, run) in enumerate(runs.items()):
        print(("\n" if index else "") + report(name, run))
    if args.plot is not None:
        figure = plot_runs(runs)
        try:
            figure.savefig(args.plot, bbox_inches="tight")
        except OSError as error:
            raise CommandError(f"--plot {args.plot}: cannot write it ({error.strerror})") from None
        print(f"\ncurves drawn in {args.plot}")
    return EXIT_FOUND if any(diagnose(run) for run in runs.values()) else 0


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


# --- mlxllm doctor -----------------------------------------------------------------------------

def corpus_check() -> tuple[str, bool]:
    """Where the corpus is and whether its SHA-256 is right (False: it is not)."""
    filename = "tinyshakespeare.txt"
    for directory in search_dirs():
        if (directory / filename).is_file():
            try:
                read_verified(directory / filename)
            except CorpusNotFoundError as error:
                return str(error), False
            return f"{directory / filename} (SHA-256 as expected)", True
    url = os.environ.get("MLXLLM_CORPUS_URL", CORPUS_URL)
    return (f"not in {' or '.join(map(str, search_dirs()))}; mlxllm train downloads it from "
            f"{url}"), True


def compile_cache_check() -> tuple[str, bool]:
    """How many kernels MLX's compile cache holds and which are broken (False: some are)."""
    directory = compile_cache_dir()
    kernels = len(list(directory.glob("lib*.so")))
    broken = broken_kernels(directory)
    if not broken:
        return f"{directory}: {kernels} kernels, no broken entries", True
    lines = [f"{directory}: {kernels} kernels, {len(broken)} broken (mlxllm train removes "
             "them, or delete them yourself):"]
    lines += [f"{path} ({problem})" for path, problem in broken.items()]
    return "\n".join(lines), False


def doctor(args: argparse.Namespace) -> int:
    """Print the platform, MLX set-up, BLAS in use, a measured matmul speed, and check the
    corpus and MLX's compile cache; exit code 1 when one of them is wrong."""
    from mlxllm.hardware import describe_machine, matmul_gflops

    facts = describe_machine()
    facts["f32 matmul"] = f"{matmul_gflops(args.size):.1f} GFLOP/s at n={args.size}"
    (facts["corpus"], corpus_ok), (facts["compile cache"], cache_ok) = (corpus_check(),
                                                                        compile_cache_check())
    width = max(map(len, facts))
    for name, value in facts.items():
        print(f"{name:<{width}}  {value}".replace("\n", "\n" + " " * (width + 4)))
    if "reference BLAS" in facts["BLAS"]:
        print("\nMatrix products are slow here: install the system OpenBLAS "
              "(Debian/Ubuntu: apt-get install libopenblas0-pthread).")
    return 0 if corpus_ok and cache_ok else 1


# --- the parser --------------------------------------------------------------------------------

def bounded(kind: type, low: float, high: float | None = None) -> Callable[[str], object]:
    """An argparse type: a finite number of `kind` from `low` to `high` (None: no limit)."""
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
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
    command.add_argument("--preset", choices=PRESETS,
                         help="baby: a small model for a laptop's CPU; full: nanoGPT's "
                         f"Shakespeare model, for a Mac's GPU (default {DEFAULT_PRESET}); with "
                         "--resume, it only picks the default --run-dir")
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
    command.add_argument("--keep", type=bounded(int, 0), default=KEEP, metavar="N",
                         help="keep the newest N checkpoints in the run directory, and the one "
                         f"'latest' names (default {KEEP}; 0: keep them all)")
    command.add_argument("--processes", type=bounded(int, 1, 64), metavar="N",
                         help="train data-parallel with N processes on this machine, started "
                         "through mlx.launch (chapter 12); --batch-size stays the global batch. "
                         "For several machines, start `mlx.launch --hostfile FILE -- mlxllm "
                         "train ...` yourself")
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
    command.add_argument("--top-p", type=bounded(float, 0, 1), metavar="P",
                         help="draw from the fewest likeliest tokens that hold a share P of the "
                         "probability (nucleus sampling; default: off)")
    command.add_argument("--min-p", type=bounded(float, 0, 1), metavar="P",
                         help="drop tokens less than P times as likely as the likeliest "
                         "(default: off)")
    command.add_argument("--repetition-penalty", type=bounded(float, 1), default=1.0,
                         metavar="R", help="make the last 20 tokens R times less likely to "
                         "come again (CTRL's penalty; default 1: off)")
    command.add_argument("--seed", type=bounded(int, 0, 2**64 - 1), default=0,
                         help="same seed, same text (default 0)")
    command.add_argument("--num-samples", type=bounded(int, 1), default=1, metavar="N",
                         help="write N texts, with seeds SEED, SEED+1, ... (default 1)")
    command.add_argument("--draft", type=Path, metavar="DIR",
                         help="speculative decoding: a smaller model trained with the same "
                         "tokenizer (a run or step-* directory) drafts, the model checks")
    command.add_argument("--draft-tokens", type=bounded(int, 1, 64), default=4, metavar="K",
                         help="tokens the draft proposes per round (default 4)")
    command.set_defaults(run=generate_command)


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    """`mlxllm eval` and its options."""
    command = commands.add_parser(
        "eval", allow_abbrev=False, help="score a trained model on a text",
        description="Score the model of a checkpoint on a text in nats and bits per character, "
        "with a 95%% bootstrap interval over its windows, beside the baselines of chapter 10 "
        "fitted on the training split.")
    command.add_argument("--checkpoint", type=Path, required=True, metavar="DIR",
                         help="a run directory (its latest checkpoint) or one step-* directory")
    command.add_argument("--text", type=Path, metavar="FILE",
                         help="a UTF-8 text file to score (default: the validation split)")
    command.add_argument("--max-order", type=bounded(int, 0, 12), default=7, metavar="N",
                         help="longest n-gram among the baselines, 1 to 12; 0 skips the "
                         "baselines (default 7)")
    command.add_argument("--seed", type=bounded(int, 0, 2**32 - 1), default=0,
                         help="seed of the bootstrap's draws (default 0)")
    command.set_defaults(run=eval_command)


def add_diagnose_command(commands: argparse._SubParsersAction) -> None:
    """`mlxllm diagnose` and its options."""
    command = commands.add_parser(
        "diagnose", allow_abbrev=False, help="say what looks wrong in a training run",
        description="Read the history that training runs recorded (loss, learning rate and "
        "gradient norm of every step, validation loss, a divergence) and report divergence, a "
        "bad start, a loss that does not move or is too good to be true, spikes, a learning "
        "rate out of range and overfitting, each with the fix to try and the section of "
        "chapter 11 that shows it. Exit status 1 when something was found.")
    command.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                         help="run directories written by mlxllm train (or by the book)")
    command.add_argument("--plot", type=Path, metavar="FILE",
                         help="also draw the runs' loss and gradient norm into FILE (.png, "
                         ".pdf or .svg)")
    command.set_defaults(run=diagnose_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxllm", description="The library of 'Build a Large Language Model from "
        "Scratch, with MLX'.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_command(commands)
    add_generate_command(commands)
    add_eval_command(commands)
    add_diagnose_command(commands)
    check = commands.add_parser("doctor", help="check this machine's MLX set-up")
    check.add_argument("--size", type=bounded(int, 1, 8192), default=1024,
                       help="matrix size n of the timed n×n product, 1 to 8192 (default 1024)")
    check.set_defaults(run=doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return args.run(args)
    except (CommandError, CheckpointError, TokenizerFileError,
            CorpusNotFoundError) as error:
        print(f"mlxllm: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nmlxllm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RuntimeError as error:  # MLX's; a message for the ones a user can mend
        message = kernel_error(error)
        if message is None:
            raise
        print(f"mlxllm: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
