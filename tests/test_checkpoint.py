"""mlxllm.checkpoint beyond the happy path: damaged records, pruning, leftovers of killed saves."""

# The fixture `corpus` comes from another test module, so ruff takes each use for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlxllm.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    remove_stale_partials,
    resume,
)
from mlxllm.terminal import DeferredInterrupt
from mlxllm.train import TrainConfig
from tests.test_train import corpus, tiny_trainer  # noqa: F401  (a fixture)


def dead_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True, check=True)
    return int(process.stdout)


def step_names(run_dir: Path) -> list[str]:
    return sorted(path.name for path in run_dir.glob("step-*"))


def edit_record(checkpoint: Path, edit: object) -> None:
    """Replace state.json by edit(record), or by `edit` itself when it is not callable."""
    state = checkpoint / "state.json"
    record = json.loads(state.read_text())
    state.write_text(json.dumps(edit(record) if callable(edit) else edit))


@pytest.mark.parametrize("content", [[], None, "step-3"], ids=["list", "null", "string"])
def test_a_record_that_is_not_a_json_object_is_refused(corpus: tuple, tmp_path: Path,
                                                       content: object) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)
    edit_record(latest_checkpoint(tmp_path), content)
    with pytest.raises(CheckpointError, match="state.json is damaged: not a JSON object"):
        read_checkpoint(latest_checkpoint(tmp_path))


def test_resume_refuses_a_record_without_the_sampler_state(corpus: tuple,
                                                            tmp_path: Path) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)
    edit_record(latest_checkpoint(tmp_path),
                lambda record: {key: value for key, value in record.items() if key != "sampler"})
    with pytest.raises(CheckpointError, match="state.json is damaged: it has no sampler"):
        resume(tiny_trainer(corpus, run_dir=tmp_path))


def test_resume_refuses_weights_that_do_not_fit_an_edited_record(corpus: tuple,
                                                                  tmp_path: Path) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)

    def deeper(record: dict) -> dict:
        record["model"]["n_layer"] = 2
        return record

    edit_record(latest_checkpoint(tmp_path), deeper)
    with pytest.raises(CheckpointError, match="the weights do not fit the model that "
                                              "state.json describes"):
        resume(tiny_trainer(corpus, run_dir=tmp_path, n_layer=2))


def test_the_weights_are_read_without_the_optimizer_file(corpus: tuple, tmp_path: Path) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run(until=3)
    optimizer = latest_checkpoint(tmp_path) / "optimizer.safetensors"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    record, weights, state = read_checkpoint(latest_checkpoint(tmp_path), optimizer=False)
    assert record["step"] == 3 and weights and state == {}
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing or differs"):
        read_checkpoint(latest_checkpoint(tmp_path))


def test_pruning_keeps_the_newest_and_the_one_latest_names(corpus: tuple,
                                                           tmp_path: Path) -> None:
    tiny_trainer(corpus, run_dir=tmp_path).run()
    assert step_names(tmp_path) == ["step-0000003", "step-0000006", "step-0000009",
                                    "step-0000012"]
    (tmp_path / "latest").write_text("step-0000003\n")
    removed = prune_checkpoints(tmp_path, keep=2)
    assert [path.name for path in removed] == ["step-0000006"]
    assert step_names(tmp_path) == ["step-0000003", "step-0000009", "step-0000012"]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        prune_checkpoints(tmp_path, keep=0)


def test_a_trainer_with_keep_prunes_after_each_save(corpus: tuple, tmp_path: Path) -> None:
    trainer = tiny_trainer(corpus, run_dir=tmp_path)
    trainer.keep = 2
    trainer.run()
    assert step_names(tmp_path) == ["step-0000009", "step-0000012"]
    assert latest_checkpoint(tmp_path).name == "step-0000012"


def test_only_the_partial_saves_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    for pid in (dead, alive):
        partial = tmp_path / f".step-0000004.partial-{pid}"
        partial.mkdir()
        (partial / "model.safetensors").write_bytes(bytes(10))
    (tmp_path / "step-0000002").mkdir()
    removed = remove_stale_partials(tmp_path)
    assert [path.name for path in removed] == [f".step-0000004.partial-{dead}"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f".step-0000004.partial-{alive}", "step-0000002"]


def test_a_seed_out_of_range_is_refused() -> None:
    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
            TrainConfig(seed=seed)


def test_an_error_after_ctrl_c_is_reported_as_the_interrupt() -> None:
    """Ctrl-C reaches the compiler MLX runs too; MLX then raises RuntimeError."""
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupt():
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("Could not load C++ shared library tmp_1.so")
    with pytest.raises(RuntimeError):
        with DeferredInterrupt():
            raise RuntimeError("an error of its own")
