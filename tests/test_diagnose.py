"""mlxllm.diagnose: each check on a history made to show its failure and on a healthy one,
reading run directories (checkpoints, failures, damage), the learning-rate range test and
the laboratory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlxllm.checkpoint import CheckpointError
from mlxllm.data import BatchSampler
from mlxllm.diagnose import (
    FAILURE_FILE,
    FIXES,
    SECTIONS,
    Experiment,
    RunRecord,
    diagnose,
    learning_rate_range,
    read_run,
    record_failure,
    report,
    running_median,
    suggest_learning_rate,
)
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import CharTokenizer
from mlxllm.train import TrainConfig, Trainer

VOCAB = 65
UNIFORM = math.log(VOCAB)
STEPS = 200


def healthy_losses(steps: int = STEPS, seed: int = 0) -> np.ndarray:
    """A loss that falls from ln V towards 2.4 like the laboratory's control, with noise."""
    rng = np.random.default_rng(seed)
    fall = 2.4 + (UNIFORM - 2.4) * np.exp(-np.arange(steps) / 20)
    return fall + rng.normal(0, 0.05, steps)


def make_run(losses: np.ndarray, val: list[float] | None = None, failure: str | None = None,
             **train: object) -> RunRecord:
    """A RunRecord with these per-step losses, evaluations every 25 steps (or `val`)."""
    steps = list(range(1, len(losses) + 1))
    eval_steps = list(range(25, len(losses) + 1, 25))
    if val is None:
        val = [float(running_median(losses)[step - 1]) + 0.02 for step in eval_steps]
    eval_steps = eval_steps[:len(val)]
    recipe = {"learning_rate": 1e-3, "warmup_steps": 20, "steps": len(losses), **train}
    history = {"step": steps, "loss": [float(x) for x in losses],
               "learning_rate": [1e-3] * len(losses), "grad_norm": [1.0] * len(losses),
               "eval_step": eval_steps, "val_loss": val}
    return RunRecord(history, {"vocab_size": VOCAB}, recipe, failure)


def problems(run: RunRecord) -> list[str]:
    return [finding.problem for finding in diagnose(run)]


def test_a_healthy_run_raises_no_alarm() -> None:
    for seed in range(5):
        assert problems(make_run(healthy_losses(seed=seed))) == []


def test_a_recorded_failure_is_a_divergence_after_the_last_finite_step() -> None:
    run = make_run(healthy_losses(40), failure="step 41: loss nan, gradient norm inf")
    (finding,) = diagnose(run)
    assert (finding.problem, finding.step) == ("diverged", 41)
    assert "step 41: loss nan" in finding.evidence


def test_a_loss_that_blows_up_and_stays_up_diverged_but_one_spike_did_not() -> None:
    losses = healthy_losses()
    losses[60:] = 50.0
    assert "diverged" in problems(make_run(losses))
    spiked = healthy_losses()
    spiked[60] = 50.0
    assert "diverged" not in problems(make_run(spiked))


def test_a_first_loss_far_above_ln_v_is_a_bad_start() -> None:
    losses = healthy_losses()
    losses[:10] = UNIFORM + 20
    assert problems(make_run(losses))[:1] == ["bad start"]


def test_a_loss_that_never_moves_is_not_learning() -> None:
    assert problems(make_run(np.full(STEPS, UNIFORM))) == ["not learning"]


def test_a_training_loss_near_zero_is_too_good() -> None:
    losses = np.maximum(healthy_losses() - 2.39, 0.01)
    assert "too good" in problems(make_run(losses))


def test_an_early_spike_without_warm_up_but_not_with_it() -> None:
    losses = healthy_losses()
    losses[8] += 2.0
    assert problems(make_run(losses, warmup_steps=0)) == ["early spike"]
    assert problems(make_run(losses, warmup_steps=20)) == []


def test_repeated_spikes_after_the_warm_up() -> None:
    losses = healthy_losses()
    losses[[80, 120, 160]] += 1.5
    assert problems(make_run(losses)) == ["spikes"]
    losses[[120, 160]] -= 1.5
    assert problems(make_run(losses)) == []


@pytest.mark.parametrize(("rate", "problem"), [(3e-2, "learning rate too high"),
                                               (1e-5, "learning rate too low")])
def test_a_learning_rate_outside_the_usual_range(rate: float, problem: str) -> None:
    assert problems(make_run(healthy_losses(), learning_rate=rate)) == [problem]


def test_validation_rising_while_training_falls_is_overfitting() -> None:
    losses = healthy_losses()
    val = [3.0, 2.7, 2.6, 2.62, 2.7, 2.8, 2.9, 3.0]
    (finding,) = diagnose(make_run(losses, val=val))
    assert (finding.problem, finding.step) == ("overfitting", 75)
    noisy = [3.0, 2.7, 2.6, 2.62, 2.6, 2.61, 2.6, 2.63]
    assert problems(make_run(losses, val=noisy)) == []
    mismatched = [value + 2.0 for value in val]  # never close to training: not overfitting
    assert problems(make_run(losses, val=mismatched)) == []


def test_every_problem_has_a_fix_and_a_section() -> None:
    assert set(FIXES) == set(SECTIONS)
    losses = healthy_losses()
    losses[60:] = 50.0
    text = report("runs/x", make_run(losses, learning_rate=1.0))
    assert "diverged (step" in text and "  try: " in text and 'see: chapter 11, "' in text
    assert "nothing wrong found" in report("runs/y", make_run(healthy_losses()))
    assert report("runs/z", make_run(healthy_losses(1))).startswith("runs/z: 1 step recorded")


def test_running_median_ignores_one_outlier() -> None:
    smooth = running_median([1.0, 1.0, 100.0, 1.0, 1.0], window=3)
    assert smooth.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]


# --- run directories ---------------------------------------------------------------------------

def tiny_experiment(root: Path, steps: int = 6) -> Experiment:
    text = "to be or not to be, that is the question\n" * 40
    tokenizer = CharTokenizer.train(text)
    ids = np.array(tokenizer.encode(text), dtype=np.int32)
    config = TrainConfig(steps=steps, warmup_steps=1, eval_every=3, checkpoint_every=steps,
                         compile=False)
    return Experiment(root, ids[:1200], ids[1200:], GPTConfig(
        tokenizer.vocab_size, context=16, n_layer=1, n_head=2, n_embd=16), config, tokenizer)


def test_an_experiment_writes_a_run_that_read_run_reads(tmp_path: Path) -> None:
    lab = tiny_experiment(tmp_path)
    trainer = lab.run("a", learning_rate=2e-3)
    run = read_run(tmp_path / "a")
    assert run.history["step"] == list(map(float, range(1, 7)))
    assert run.failure is None and run.train["learning_rate"] == 2e-3
    assert run.train["min_learning_rate"] == pytest.approx(2e-4)  # the base's ratio, kept
    assert (tmp_path / "a" / "tokenizer.txt").is_file()
    assert trainer.history["val_loss"] == run.history["val_loss"]


def test_a_diverged_run_leaves_its_failure_and_read_run_prefers_the_longer_history(
        tmp_path: Path) -> None:
    lab = tiny_experiment(tmp_path, steps=12)
    lab.run("boom", learning_rate=1e9, grad_clip=1e9)
    run = read_run(tmp_path / "boom")
    assert run.failure is not None and run.failure.startswith("step ")
    assert problems(run)[0] == "diverged"
    saved = json.loads((tmp_path / "boom" / FAILURE_FILE).read_text())
    assert "sampler" not in saved and saved["failure"] == run.failure


def test_record_failure_needs_a_run_directory() -> None:
    model = GPT(GPTConfig(10, context=4, n_layer=1, n_head=1, n_embd=4))
    ids = np.arange(100, dtype=np.int32) % 10
    trainer = Trainer(model, TrainConfig(steps=2, warmup_steps=0), ids, ids, 1.0, log=None)
    from mlxllm.train import TrainingDiverged
    with pytest.raises(ValueError, match="no run_dir"):
        record_failure(trainer, TrainingDiverged("step 1: loss nan"))


def test_read_run_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint and no failure.json"):
        read_run(tmp_path / "empty")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / FAILURE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="failure.json cannot be read"):
        read_run(damaged)
    (damaged / FAILURE_FILE).write_text(json.dumps({"history": {}, "model": {}}))
    with pytest.raises(CheckpointError, match="its record is damaged"):
        read_run(damaged)


def test_the_range_test_stops_when_the_loss_explodes_and_suggests_below_its_minimum() -> None:
    text = "abcd" * 500
    ids = np.array([ord(c) - 97 for c in text], dtype=np.int32)
    config = TrainConfig(steps=10, warmup_steps=0, compile=False)
    mx.random.seed(0)
    model = GPT(GPTConfig(4, context=8, n_layer=1, n_head=1, n_embd=8))
    rates, losses = learning_rate_range(model, BatchSampler(ids, 4, 8, 0), config,
                                        1e-4, 1e3, 60)
    assert len(rates) == len(losses) <= 60
    assert np.all(np.diff(rates) > 0) and rates[0] == pytest.approx(1e-4)
    stopped = len(rates) < 60
    assert stopped == (not np.isfinite(losses[-1]) or losses[-1] > 4 * losses.min())
    suggestion = suggest_learning_rate(rates, losses)
    assert rates[0] / 10 <= suggestion <= rates[-1] / 10


def test_the_residual_stream_ends_where_the_model_does() -> None:
    from mlxllm.diagnose import largest_activations, residual_stream
    mx.random.seed(0)
    model = GPT(GPTConfig(10, context=8, n_layer=3, n_head=2, n_embd=8))
    ids = mx.array(np.arange(16, dtype=np.int32).reshape(2, 8) % 10)
    stream = residual_stream(model, ids)
    assert len(stream) == 4
    logits = model.token_embedding.as_linear(model.norm(stream[-1]))
    assert mx.allclose(logits, model(ids), atol=1e-5).item()
    sizes = largest_activations(model, ids)
    assert list(sizes) == ["embeddings", "block 1", "block 2", "block 3", "logits",
                           "largest weight"]
    assert sizes["block 3"] == pytest.approx(mx.abs(stream[-1]).max().item())
