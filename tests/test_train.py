"""mlxllm.train and mlxllm.checkpoint as `mlxllm train` uses them: a run learns, resumes exactly,
refuses bad checkpoints and never loses its last good one."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlxllm.checkpoint import CheckpointError, latest_checkpoint, read_checkpoint, resume
from mlxllm.cli import RUN_CONFIG, RUN_TRAINER
from mlxllm.data import cache_dir, split_train_val
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import CharTokenizer
from mlxllm.train import Trainer, TrainingDiverged
from tests.conftest import ROOT

TINY_MODEL = dict(context=16, n_layer=1, n_head=2, n_embd=32)
# Flags for a model that trains in milliseconds per step, evaluated on a slice of the split.
TINY_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context", "16",
              "--batch-size", "4", "--warmup-steps", "1", "--no-compile",
              "--eval-tokens", "512", "--sample-tokens", "0"]


def corpus_dir() -> Path | None:
    """A directory holding the verified corpus: $MLXLLM_DATA, ../shared/data or the cache."""
    candidates = [ROOT.parent / "shared" / "data", cache_dir()]
    if os.environ.get("MLXLLM_DATA"):
        candidates.insert(0, Path(os.environ["MLXLLM_DATA"]))
    for directory in candidates:
        if (directory / "tinyshakespeare.txt").is_file():
            return directory
    return None


def cli_environment(cache: Path) -> dict[str, str]:
    """Environment variables for the CLI: the local corpus, and a private token cache."""
    data = corpus_dir()
    if data is None:
        pytest.skip("no local copy of tinyshakespeare.txt")
    return {"MLXLLM_DATA": str(data), "XDG_CACHE_HOME": str(cache)}


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`mlxllm ARGS` in a new process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mlxllm.cli", *args], cwd=cwd,
                          env={**os.environ, **env}, capture_output=True, text=True)


def history(run_dir: Path) -> dict[str, list[float]]:
    """The history stored in a run's latest checkpoint."""
    state = latest_checkpoint(run_dir) / "state.json"
    return json.loads(state.read_text())["history"]


@pytest.fixture(scope="module")
def corpus() -> tuple[CharTokenizer, np.ndarray, np.ndarray]:
    """The character tokenizer, 200k training ids and 2,048 validation ids."""
    data = corpus_dir()
    if data is None:
        pytest.skip("no local copy of tinyshakespeare.txt")
    text = (data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tokenizer = CharTokenizer.train(text)
    train_text, val_text = split_train_val(text)
    return (tokenizer, np.array(tokenizer.encode(train_text[:200_000]), dtype=np.uint16),
            np.array(tokenizer.encode(val_text[:2048]), dtype=np.uint16))


def tiny_trainer(corpus: tuple, run_dir: Path | None = None, steps: int = 12,
                 n_layer: int = 1, learning_rate: float = 1e-3) -> Trainer:
    """A freshly initialised tiny model and its trainer, with the CLI's classes."""
    tokenizer, train_ids, val_ids = corpus
    mx.random.seed(0)
    model = GPT(GPTConfig(tokenizer.vocab_size, **{**TINY_MODEL, "n_layer": n_layer}))
    config = RUN_CONFIG(steps=steps, batch_size=8, learning_rate=learning_rate,
                        warmup_steps=1, eval_every=steps // 2, checkpoint_every=steps // 4,
                        compile=False)
    return RUN_TRAINER(model, config, train_ids, val_ids, 1.0, tokenizer.fingerprint(),
                       run_dir=run_dir, log=None)


def test_the_loss_falls_on_a_tiny_run(corpus: tuple) -> None:
    result = tiny_trainer(corpus, steps=60, learning_rate=3e-3).run()
    first, last = np.mean(result["loss"][:5]), np.mean(result["loss"][-5:])
    assert last < first - 0.8, (first, last)
    assert result["val_loss"][-1] < result["val_loss"][0], result["val_loss"]


def test_a_stopped_and_resumed_run_matches_an_uninterrupted_one(corpus: tuple,
                                                                tmp_path: Path) -> None:
    straight = tiny_trainer(corpus).run()
    tiny_trainer(corpus, run_dir=tmp_path).run(until=5)
    assert latest_checkpoint(tmp_path).name == "step-0000005"
    resumed = tiny_trainer(corpus, run_dir=tmp_path)
    resume(resumed)
    finished = resumed.run()
    assert finished["step"] == straight["step"] == list(range(1, 13))
    for name in ("loss", "grad_norm", "learning_rate", "val_loss"):
        np.testing.assert_allclose(finished[name], straight[name], rtol=1e-5, err_msg=name)


def test_a_cli_run_stopped_by_ctrl_c_resumes_to_the_same_losses(tmp_path: Path) -> None:
    env = cli_environment(tmp_path / "cache")
    steps = ["--steps", "100", "--eval-every", "50", "--checkpoint-every", "10"]
    straight = run_cli(["train", *TINY_FLAGS, *steps, "--run-dir", "straight"], tmp_path, env)
    assert straight.returncode == 0, straight.stderr
    process = subprocess.Popen([sys.executable, "-m", "mlxllm.cli", "train", *TINY_FLAGS,
                                *steps, "--run-dir", "stopped"], cwd=tmp_path,
                               env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "stopped" / "latest").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    saved = latest_checkpoint(tmp_path / "stopped")
    stopped_at = json.loads((saved / "state.json").read_text())["step"]
    assert 10 <= stopped_at < 100 and saved.name == f"step-{stopped_at:07d}"
    assert f"checkpoint saved in {Path('stopped') / saved.name}" in stderr
    command = re.search(r"continue with: (.*)", stderr).group(1)
    assert command.startswith("mlxllm train --run-dir stopped --resume"), command
    resumed = run_cli(shlex.split(command)[1:], tmp_path, env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {stopped_at}" in resumed.stdout
    finished, expected = history(tmp_path / "stopped"), history(tmp_path / "straight")
    assert finished["step"] == expected["step"] and finished["eval_step"] == [50, 100]
    for name in ("loss", "grad_norm", "val_loss"):
        np.testing.assert_allclose(finished[name], expected[name], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("file, damage", [
    ("model.safetensors", lambda data: data[:-8] + bytes(8)),
    ("optimizer.safetensors", lambda data: data[:100]),
    ("state.json", lambda data: data[:50]),
], ids=["weights", "optimizer", "record"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(
        corpus: tuple, tmp_path: Path, file: str, damage: Callable[[bytes], bytes]) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)
    path = latest_checkpoint(tmp_path) / file
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        resume(tiny_trainer(corpus, run_dir=tmp_path))


def test_a_checkpoint_of_another_run_is_refused_naming_the_field(corpus: tuple,
                                                               tmp_path: Path) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)
    with pytest.raises(CheckpointError, match="model differs, n_layer: 1 there, 2 here"):
        resume(tiny_trainer(corpus, run_dir=tmp_path, n_layer=2))
    with pytest.raises(CheckpointError, match="train differs, .*steps: 12 there, 16 here"):
        resume(tiny_trainer(corpus, run_dir=tmp_path, steps=16))
    other = tiny_trainer(corpus, run_dir=tmp_path)
    other.fingerprint = CharTokenizer.train("abc").fingerprint()
    with pytest.raises(CheckpointError, match="tokenizer_sha256 differs"):
        resume(other)


def test_a_crash_while_saving_never_replaces_the_last_good_checkpoint(
        corpus: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)
    good = latest_checkpoint(tmp_path)
    before = {path.name: path.read_bytes() for path in good.iterdir()}
    trainer = tiny_trainer(corpus, run_dir=tmp_path)
    resume(trainer)
    save = mx.save_safetensors

    def disk_full(path: str, arrays: dict) -> None:
        if path.endswith("optimizer.safetensors"):
            raise OSError("No space left on device")
        save(path, arrays)

    monkeypatch.setattr(mx, "save_safetensors", disk_full)
    with pytest.raises(OSError):
        trainer.run()
    partial = tmp_path / f".step-0000006.partial-{os.getpid()}"
    assert partial.is_dir() and not (partial / "state.json").exists()
    assert latest_checkpoint(tmp_path) == good
    assert {path.name: path.read_bytes() for path in good.iterdir()} == before
    monkeypatch.undo()
    (tmp_path / ".step-0000099.partial-1").mkdir()  # another process's leftover
    resumed = tiny_trainer(corpus, run_dir=tmp_path)
    resume(resumed)
    resumed.run()
    assert latest_checkpoint(tmp_path).name == "step-0000012"
    assert not partial.exists()  # this process's leftover became step-0000006
    assert sorted(path.name for path in tmp_path.glob("step-*")) == [
        f"step-{step:07d}" for step in (3, 6, 9, 12)]



# --- divergence, the speed figure and Ctrl-C ---------------------------------------------------

def finite_checkpoint(checkpoint: Path) -> bool:
    """Whether every number a checkpoint holds is finite: weights, moments, recorded losses."""
    record, weights, optimizer = read_checkpoint(checkpoint)
    numbers = [value for values in record["history"].values() for value in values]
    return (all(map(math.isfinite, numbers))
            and all(mx.all(mx.isfinite(array)).item()
                    for array in [*weights.values(), *optimizer.values()]))


def test_a_diverging_run_stops_before_saving_a_number_that_is_not_finite(
        corpus: tuple, tmp_path: Path) -> None:
    trainer = tiny_trainer(corpus, run_dir=tmp_path, steps=12, learning_rate=1e9)
    with pytest.raises(TrainingDiverged, match=r"^step \d+: "):
        trainer.run()
    assert trainer.step < 12
    saved = sorted(tmp_path.glob("step-*"))
    assert all(map(finite_checkpoint, saved))
    if saved:
        assert latest_checkpoint(tmp_path) == saved[-1]
    assert all(map(math.isfinite, trainer.history["loss"] + trainer.history["val_loss"]))


def test_weights_that_are_not_finite_are_never_saved(corpus: tuple, tmp_path: Path) -> None:
    trainer = tiny_trainer(corpus, run_dir=tmp_path)
    trainer.run(until=3)
    good = latest_checkpoint(tmp_path)
    trainer.model.update({"norm": {"weight": trainer.model.norm.weight * mx.nan}})
    with pytest.raises(TrainingDiverged, match="step 3: the weights"):
        trainer.save()
    assert latest_checkpoint(tmp_path) == good and finite_checkpoint(good)


def test_tokens_per_second_counts_the_steps_alone(corpus: tuple) -> None:
    trainer, lines = tiny_trainer(corpus, steps=4), []
    step, evaluation = trainer.train_step, trainer.val_nats_per_char

    def slow_step(*batch: mx.array) -> tuple[mx.array, mx.array]:
        time.sleep(1.5 if trainer.step == 0 else 0.05)  # the first step compiles
        return step(*batch)

    def slow_evaluation() -> float:
        time.sleep(1.5)
        return evaluation()

    trainer.train_step, trainer.val_nats_per_char = slow_step, slow_evaluation
    trainer.log = lines.append
    trainer.run()
    rates = [float(re.search(r"([\d,]+) tok/s", line).group(1).replace(",", ""))
             for line in lines]
    # 8 windows of 16 tokens a step. Steps of 0.05 s plus up to 0.35 s of work on a busy
    # machine make 320-2,560 tok/s; counting the 1.5 s of the first step or an evaluation
    # in would make at most 256 / 1.6 = 160 at step 2 and 512 / 3.2 = 160 at step 4.
    assert len(rates) == 2 and all(128 / 0.4 < rate <= 128 / 0.05 for rate in rates), rates


def test_ctrl_c_during_an_evaluation_is_acknowledged_at_once(
        corpus: tuple, capfd: pytest.CaptureFixture[str]) -> None:
    trainer, heard = tiny_trainer(corpus, steps=4), []
    evaluation = trainer.val_nats_per_char

    def interrupted_evaluation() -> float:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the evaluation runs
        time.sleep(0.1)
        heard.append(capfd.readouterr().err)
        return evaluation()

    trainer.val_nats_per_char = interrupted_evaluation
    with pytest.raises(KeyboardInterrupt, match="stopped after step 2"):
        trainer.run()
    assert "stopping after the current step or evaluation" in heard[0], heard
