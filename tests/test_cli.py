"""The command line as a new user runs it."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlxllm.checkpoint import latest_checkpoint
from mlxllm.cli import (
    RUN_CONFIG,
    build_parser,
    field_help,
    flag_settings,
    load_model,
    main,
    settable_fields,
)
from mlxllm.model import GPTConfig
from mlxllm.tokenizer import CharTokenizer
from tests.conftest import ROOT
from tests.test_train import TINY_FLAGS, cli_environment, finite_checkpoint, run_cli


def test_doctor_reports_the_machine() -> None:
    result = subprocess.run([sys.executable, "-m", "mlxllm.cli", "doctor", "--size", "256"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    lines = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("  ")
        lines[name.strip()] = value.strip()
    for field in ("platform", "Python", "MLX", "default device", "BLAS", "f32 matmul"):
        assert field in lines, result.stdout
    gflops = float(lines["f32 matmul"].split()[0])
    assert gflops > 0
    if sys.platform.startswith("linux"):
        assert "OpenBLAS" in lines["BLAS"], "the system OpenBLAS should be in use"


# --- mlxllm train and mlxllm generate ------------------------------------------------------------

@dataclass
class Outcome:
    """What one in-process `mlxllm ...` call returned and printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def mlxllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """`mlxllm(*args)` runs the command line in this process, in tmp_path, on the local corpus."""
    for name, value in cli_environment(tmp_path / "cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> Outcome:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return Outcome(code, out, err)

    return call


def tiny_run(mlxllm: Callable[..., Outcome], *extra: str) -> Outcome:
    """Train the tiny model for 6 steps, with evaluations and checkpoints at 3 and 6."""
    outcome = mlxllm("train", *TINY_FLAGS, "--steps", "6", "--eval-every", "3",
                     "--checkpoint-every", "3", *extra)
    assert outcome.code == 0, outcome.err
    return outcome


def saved_record(run_dir: Path) -> dict:
    return json.loads((latest_checkpoint(run_dir) / "state.json").read_text())


def assert_error(outcome: Outcome, *fragments: str) -> None:
    """A clear one-line error: exit code 2, `mlxllm: error:`, and the fragments named."""
    assert outcome.code == 2, outcome
    assert outcome.err.startswith("mlxllm: error: "), outcome.err
    for fragment in fragments:
        assert fragment in outcome.err, (fragment, outcome.err)


def test_every_config_field_has_a_flag() -> None:
    argv, expected = ["train"], {}
    for cls in (GPTConfig, RUN_CONFIG):
        for name, kind in typing.get_type_hints(cls).items():
            flag, value = "--" + name.replace("_", "-"), {int: 7, float: 0.5, str: "x"}.get(kind)
            if name == "vocab_size":
                continue
            assert name not in expected, f"{name} is a field of both configurations"
            argv += [f"--no-{flag[2:]}"] if kind is bool else [flag, str(value)]
            expected[name] = False if kind is bool else value
    assert flag_settings(build_parser().parse_args(argv)) == expected
    assert flag_settings(build_parser().parse_args(["train"])) == {}


def train_flag_helps() -> dict[str, str]:
    """The help text of every option of `mlxllm train`, by destination."""
    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    return {action.dest: action.help or "" for action in commands.choices["train"]._actions}


def test_every_train_flag_says_what_it_means() -> None:
    helps = train_flag_helps()
    for name, text in helps.items():
        assert text.strip() and text.strip(" .").lower() != name.replace("_", " "), (name, text)
    for name in settable_fields():
        found = re.fullmatch(r"(.+?) (?:Presets: .+|Every preset: .+)\.", helps[name])
        assert found, (name, helps[name])
        meaning = found.group(1).strip(" .").lower()
        assert meaning and meaning not in (name, name.replace("_", " ")), (name, helps[name])


def test_field_help_reads_the_string_under_each_field() -> None:
    @dataclass
    class Settings:
        width: int = 3
        """How wide it is."""
        depth: int = 2
        unexplained: bool = False

    @dataclass
    class MoreSettings(Settings):
        depth: int = 4
        """How deep,
        over two lines."""

    assert field_help(Settings) == {"width": "How wide it is."}
    assert field_help(MoreSettings) == {"width": "How wide it is.",
                                        "depth": "How deep, over two lines."}


def test_train_then_generate_as_a_new_user_does(tmp_path: Path) -> None:
    env = cli_environment(tmp_path / "cache")
    trained = run_cli(["train", *TINY_FLAGS, "--sample-tokens", "30", "--steps", "6",
                       "--eval-every", "3", "--checkpoint-every", "3"], tmp_path, env)
    assert trained.returncode == 0, trained.stderr
    run_dir = tmp_path / "runs" / "baby"
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "latest", "step-0000003", "step-0000006", "tokenizer.txt"]
    evaluations = [line for line in trained.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in evaluations] == ["3", "6"]
    assert "/token" in evaluations[0] and "/char" in evaluations[0]
    assert trained.stdout.count("    | ") >= 2  # a sample under each evaluation
    assert "6/6" in trained.stderr  # the progress bar
    assert "done: runs/baby/step-0000006" in trained.stdout
    generated = run_cli(["generate", "--checkpoint", "runs/baby", "--prompt", "ROMEO:",
                         "--tokens", "40"], tmp_path, env)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("ROMEO:") and len(generated.stdout) == 6 + 40 + 1


def test_a_bpe_run_trains_its_tokenizer_on_the_training_split(
        mlxllm: Callable[..., Outcome], tmp_path: Path) -> None:
    tiny_run(mlxllm, "--tokenizer", "bpe", "--vocab-size", "300")
    assert (tmp_path / "runs/baby/tokenizer.txt").read_text().startswith("mlxllm-bpe")
    assert saved_record(tmp_path / "runs/baby")["model"]["vocab_size"] == 300
    generated = mlxllm("generate", "--checkpoint", "runs/baby", "--prompt", "Thé", "--tokens", "5")
    assert generated.code == 0 and generated.out.startswith("Thé")


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'n_layer = 2\nn_embd = 64\nlearning_rate = 3e-3\ncompile = false\n'),
    (".json", '{"n_layer": 2, "n_embd": 64, "learning_rate": 0.003, "compile": false}'),
], ids=["toml", "json"])
def test_preset_then_config_file_then_flags(mlxllm: Callable[..., Outcome], tmp_path: Path,
                                            suffix: str, text: str) -> None:
    config = tmp_path / f"run{suffix}"
    config.write_text(text)
    mlxllm("train", "--config", str(config), "--n-embd", "32", "--n-head", "2", "--context", "16",
           "--batch-size", "4", "--steps", "2", "--warmup-steps", "1", "--eval-tokens", "64",
           "--sample-tokens", "0")
    record = saved_record(tmp_path / "runs/baby")
    assert record["model"]["n_layer"] == 2  # the file over the preset's 4
    assert record["model"]["n_embd"] == 32  # the flag over the file's 64
    assert record["model"]["activation"] == "gelu"  # the preset, untouched
    assert record["train"]["learning_rate"] == 3e-3 and record["train"]["compile"] is False
    assert record["train"]["weight_decay"] == 0.1 and record["train"]["steps"] == 2


@pytest.mark.parametrize("name, text, fragments", [
    ("run.toml", "n_layers = 2\n", ["run.toml: unknown key 'n_layers'",
                                    "valid keys: context, n_layer, n_head"]),
    ("run.json", '{"n_layer": "2"}', ["run.json: n_layer must be int, got '2'", "valid keys"]),
    ("run.json", '{"compile": 1}', ["compile must be bool, got 1"]),
    ("run.toml", "vocab_size = 300\n", ["vocab_size comes from the tokenizer"]),
    ("run.toml", "n_layer = \n", ["run.toml is not valid TOML"]),
    ("run.yaml", "n_layer: 2\n", ["a config file is .toml or .json"]),
    ("run.toml", "n_head = 3\n", ["invalid configuration", "n_head=3 does not divide n_embd"]),
], ids=["unknown key", "string for int", "int for bool", "vocab_size", "syntax", "yaml",
        "invalid value"])
def test_a_bad_config_file_is_a_clear_error(mlxllm: Callable[..., Outcome], tmp_path: Path,
                                            name: str, text: str, fragments: list[str]) -> None:
    (tmp_path / name).write_text(text)
    assert_error(mlxllm("train", "--config", name), *fragments)
    assert not (tmp_path / "runs").exists()


def test_bad_flags_are_clear_errors(mlxllm: Callable[..., Outcome]) -> None:
    assert_error(mlxllm("train", "--steps", "5"), "warmup_steps=100 must be in [0, steps=5)")
    assert_error(mlxllm("train", "--vocab-size", "300"), "--vocab-size is for --tokenizer bpe")
    assert_error(mlxllm("train", "--config", "missing.toml"), "missing.toml does not exist")
    with pytest.raises(SystemExit) as stop:
        mlxllm("train", "--n-layer", "two")
    assert stop.value.code == 2


def test_a_run_dir_that_holds_a_run_is_never_overwritten(mlxllm: Callable[..., Outcome],
                                                        tmp_path: Path) -> None:
    tiny_run(mlxllm)
    run_dir = tmp_path / "runs/baby"
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert_error(mlxllm("train", *TINY_FLAGS, "--steps", "6", "--n-layer", "2"),
                 "runs/baby already holds a run",
                 "mlxllm train --run-dir runs/baby --resume")
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


def test_resume_refuses_settings_that_contradict_the_checkpoint(
        mlxllm: Callable[..., Outcome], tmp_path: Path) -> None:
    tiny_run(mlxllm, "--steps", "9")
    (tmp_path / "run.json").write_text('{"learning_rate": 0.01}')
    assert_error(mlxllm("train", "--resume", "--n-layer", "2", "--steps", "9", "--config",
                        "run.json", "--tokenizer", "bpe"),
                 "n_layer: 1 in the checkpoint, 2 given", "learning_rate: 0.001 in the "
                 "checkpoint, 0.01 given", "tokenizer: 'char' in the checkpoint, 'bpe' given")
    assert saved_record(tmp_path / "runs/baby")["step"] == 9
    assert_error(mlxllm("train", "--resume", "--run-dir", "elsewhere"), "elsewhere does not exist")
    CharTokenizer.train("abc").save(tmp_path / "runs/baby/tokenizer.txt")
    assert_error(mlxllm("train", "--resume"), "runs/baby/tokenizer.txt is not the tokenizer "
                 "runs/baby/step-0000009 was trained with")


def test_resume_with_agreeing_settings_continues_the_run(mlxllm: Callable[..., Outcome],
                                                         tmp_path: Path) -> None:
    tiny_run(mlxllm, "--steps", "12", "--keep", "0")  # every checkpoint
    (tmp_path / "runs/baby/latest").write_text("step-0000003\n")  # as if stopped at step 3
    resumed = mlxllm("train", "--resume", "--n-layer", "1", "--eval-tokens", "512")
    assert resumed.code == 0, resumed.err
    assert "resuming at step 3 of 12 steps" in resumed.out
    assert saved_record(tmp_path / "runs/baby")["step"] == 12


def test_generate_from_a_run_dir_or_one_of_its_checkpoints(mlxllm: Callable[..., Outcome],
                                                           tmp_path: Path) -> None:
    tiny_run(mlxllm)
    sample = ("generate", "--prompt", "ROMEO:", "--tokens", "30", "--seed", "3")
    latest = mlxllm(*sample, "--checkpoint", "runs/baby")
    final = mlxllm(*sample, "--checkpoint", "runs/baby/step-0000006")
    earlier = mlxllm(*sample, "--checkpoint", "runs/baby/step-0000003")
    assert latest.code == final.code == earlier.code == 0
    assert latest.out == final.out and latest.out.startswith("ROMEO:")
    (tmp_path / "runs/baby/latest").write_text("step-0000003\n")
    assert mlxllm(*sample, "--checkpoint", "runs/baby").out == earlier.out


def test_generate_samples_with_every_setting_and_says_how_fast(mlxllm: Callable[..., Outcome]
                                                               ) -> None:
    tiny_run(mlxllm)
    sample = ("generate", "--checkpoint", "runs/baby", "--prompt", "ROMEO:", "--tokens", "25")
    settings = ("--top-p", "0.9", "--min-p", "0.05", "--repetition-penalty", "1.3")
    three = mlxllm(*sample, *settings, "--num-samples", "3", "--seed", "4")
    assert three.code == 0, three.err
    texts = re.split(r"--- sample \d of 3 \(seed \d\)\n", three.out)
    assert texts[0] == "" and len(texts) == 4 and all(t.startswith("ROMEO:") for t in texts[1:])
    alone = mlxllm(*sample, *settings, "--seed", "5")
    assert alone.out == texts[2]  # the second sample is seed 4 + 1
    assert re.fullmatch(r"(mlxllm: 25 tokens in [\d.]+ s, [\d,]+ tokens/s\n){3}", three.err)
    assert_error(mlxllm(*sample, "--top-p", "0"), "--top-p must be in (0, 1]")
    with pytest.raises(SystemExit) as stop:
        mlxllm(*sample, "--repetition-penalty", "0.5")
    assert stop.value.code == 2


def test_generate_with_a_draft_writes_the_models_greedy_text(mlxllm: Callable[..., Outcome]
                                                              ) -> None:
    tiny_run(mlxllm)
    tiny_run(mlxllm, "--run-dir", "runs/draft", "--n-layer", "1")
    greedy = ("generate", "--checkpoint", "runs/baby", "--tokens", "80", "--temperature", "0")
    alone = mlxllm(*greedy)
    drafted = mlxllm(*greedy, "--draft", "runs/draft", "--draft-tokens", "3")
    assert alone.code == drafted.code == 0, drafted.err
    assert drafted.out == alone.out
    assert re.search(r"tokens/s; the draft's tokens kept: \d+ of \d+ \(\d+%\)$", drafted.err)
    assert_error(mlxllm(*greedy, "--draft", "runs/nothing"), "--draft: runs/nothing does not")
    tiny_run(mlxllm, "--run-dir", "runs/bpe", "--tokenizer", "bpe", "--vocab-size", "300")
    assert_error(mlxllm(*greedy, "--draft", "runs/bpe"), "another tokenizer than --checkpoint")


def test_generate_streams_and_ctrl_c_keeps_what_was_printed(mlxllm: Callable[..., Outcome],
                                                          tmp_path: Path) -> None:
    tiny_run(mlxllm)
    process = subprocess.Popen([sys.executable, "-m", "mlxllm.cli", "generate", "--checkpoint",
                                "runs/baby", "--prompt", "ROMEO:", "--tokens", "1000000"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        shown, deadline = b"", time.monotonic() + 60
        while len(shown) < 40 and time.monotonic() < deadline:  # a million tokens take minutes
            if select.select([process.stdout], [], [], 1)[0]:
                shown += os.read(process.stdout.fileno(), 4096)
        assert len(shown) >= 40, f"nothing streamed in a minute: {shown!r}"
        process.send_signal(signal.SIGINT)
        try:
            rest, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # where it hangs: faulthandler's dump on SIGABRT
            process.send_signal(signal.SIGABRT)
            _, err = process.communicate(timeout=30)
            threads = err.decode()
            raise AssertionError(f"no exit 60 s after Ctrl-C; its threads:\n{threads}") from None
    finally:
        process.kill()
    out = (shown + rest).decode("utf-8")
    assert process.returncode == 130, err
    assert out.startswith("ROMEO:") and out.endswith("\n") and len(out) > 40
    assert "Traceback" not in err.decode() and "interrupted" in err.decode()


def test_generate_refuses_a_damaged_or_foreign_checkpoint(mlxllm: Callable[..., Outcome],
                                                          tmp_path: Path) -> None:
    tiny_run(mlxllm)
    run_dir = tmp_path / "runs/baby"
    weights = run_dir / "step-0000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + bytes(16))
    assert_error(mlxllm("generate", "--checkpoint", "runs/baby"),
                 "runs/baby/step-0000006/model.safetensors is missing or differs")
    assert mlxllm("generate", "--checkpoint", "runs/baby/step-0000003", "--tokens", "5").code == 0
    tokenizer = run_dir / "tokenizer.txt"
    CharTokenizer.train("abc").save(tokenizer)
    assert_error(mlxllm("generate", "--checkpoint", "runs/baby/step-0000003"),
                 "is not the tokenizer runs/baby/step-0000003 was trained with")
    tokenizer.write_text("mlxllm-char 1\nchars: 9\n")
    assert_error(mlxllm("generate", "--checkpoint", "runs/baby/step-0000003"),
                 "tokenizer.txt: no 'end' line")
    assert_error(mlxllm("generate", "--checkpoint", "runs/nothing"), "runs/nothing does not exist")
    assert_error(mlxllm("generate", "--checkpoint", "runs"), "runs is neither a run directory")


# --- a run that diverges ----------------------------------------------------------------------

def test_a_diverged_run_stops_keeping_its_last_finite_checkpoint(mlxllm: Callable[..., Outcome],
                                                                 tmp_path: Path) -> None:
    run = mlxllm("train", *TINY_FLAGS, "--steps", "12", "--eval-every", "1",
                 "--checkpoint-every", "1", "--learning-rate", "1e9")
    assert run.code == 1, run
    assert "done:" not in run.out and "nan/" not in run.out
    assert "mlxllm: the run diverged at step" in run.err
    for remedy in ("--learning-rate (this run: 1e+09)", "--warmup-steps", "--grad-clip",
                   "new --run-dir"):
        assert remedy in run.err, (remedy, run.err)
    run_dir = tmp_path / "runs/baby"
    saved = sorted(run_dir.glob("step-*"))
    assert saved and latest_checkpoint(run_dir) == saved[-1]
    assert f"{Path('runs/baby') / saved[-1].name} is kept as latest" in run.err
    assert all(map(finite_checkpoint, saved))
    assert "mlxllm diagnose runs/baby" in run.err
    diagnosed = mlxllm("diagnose", "runs/baby", "--plot", "curves.png")
    assert diagnosed.code == 1, diagnosed
    assert "diverged (step" in diagnosed.out and "training stopped: step" in diagnosed.out
    assert "learning rate too high" in diagnosed.out
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_diagnose_finds_nothing_in_a_healthy_run_and_names_bad_input(
        mlxllm: Callable[..., Outcome], tmp_path: Path) -> None:
    tiny_run(mlxllm)
    healthy = mlxllm("diagnose", "runs/baby")
    assert healthy.code == 0, healthy
    assert "runs/baby: 6 steps recorded, validation" in healthy.out
    assert "nothing wrong found" in healthy.out
    assert_error(mlxllm("diagnose", "runs/nothing"), "runs/nothing does not exist")
    assert_error(mlxllm("diagnose", "runs/baby", "--plot", "curves.txt"),
                 "name a .png, .pdf or .svg file")
    (tmp_path / "runs/empty").mkdir()
    assert_error(mlxllm("diagnose", "runs/empty"), "no checkpoint and no failure.json")


def test_a_model_loaded_for_generation_has_its_dropout_off(mlxllm: Callable[..., Outcome],
                                                           tmp_path: Path) -> None:
    tiny_run(mlxllm, "--dropout", "0.5")
    model, _ = load_model(tmp_path / "runs/baby")
    assert not model.training
    greedy = ("generate", "--checkpoint", "runs/baby", "--tokens", "40", "--temperature", "0")
    first, second = mlxllm(*greedy, "--seed", "1"), mlxllm(*greedy, "--seed", "2")
    assert first.code == second.code == 0 and first.out == second.out


def test_eval_scores_a_run_beside_the_baselines(mlxllm: Callable[..., Outcome],
                                                tmp_path: Path) -> None:
    tiny_run(mlxllm)
    (tmp_path / "speech.txt").write_text("ROMEO:\nBut soft, what light through yonder "
                                        "window breaks?\n" * 4)
    scored = mlxllm("eval", "--checkpoint", "runs/baby", "--text", "speech.txt",
                    "--max-order", "3")
    assert scored.code == 0, scored.err
    loss = re.search(r"loss +([\d.]+) nats/char \(95% interval ([\d.]+) to ([\d.]+)\), "
                     r"([\d.]+) bits/char", scored.out)
    nats, low, high, bits = map(float, loss.groups())
    assert low <= nats <= high and abs(bits - nats / math.log(2)) < 1e-3
    for baseline in ("uniform", "unigram", "bigram", "witten_bell", "kneser_ney", "zlib",
                     "(this model)"):
        assert re.search(rf"^  {re.escape(baseline)} +[\d.]+$", scored.out, re.M), baseline
    alone = mlxllm("eval", "--checkpoint", "runs/baby", "--text", "speech.txt",
                   "--max-order", "0")
    assert alone.code == 0 and "baselines" not in alone.out and loss.group(0) in alone.out


def test_eval_refuses_a_text_it_cannot_score(mlxllm: Callable[..., Outcome],
                                             tmp_path: Path) -> None:
    tiny_run(mlxllm)
    evaluate = ("eval", "--checkpoint", "runs/baby", "--max-order", "0", "--text")
    (tmp_path / "accents.txt").write_text("Café au lait, " * 20)
    assert_error(mlxllm(*evaluate, "accents.txt"), "accents.txt", "'é'", "not in the vocabulary")
    (tmp_path / "short.txt").write_text("ROMEO:")
    assert_error(mlxllm(*evaluate, "short.txt"), "short.txt", "too few to score")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert_error(mlxllm(*evaluate, "latin1.txt"), "not UTF-8")
    assert_error(mlxllm(*evaluate, "missing.txt"), "missing.txt does not exist")
