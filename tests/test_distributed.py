"""Chapter 12's data parallelism in mlxllm.distributed and `mlxllm train --processes N`: the
sharded sampler, the local launcher, averaging over processes, and a two-process run through
the command line that agrees with a one-process run and resumes."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import mlxllm.distributed
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
from mlxllm.cli import main, without_processes
from mlxllm.data import BatchSampler
from mlxllm.diagnose import read_run
from mlxllm.distributed import ShardedSampler, free_port_range, launch, rank_seed
from mlxllm.train import step_seed
from tests.test_train import cli_environment

# A launched process that neither finishes nor fails within this many seconds hangs.
LAUNCH_TIMEOUT = 120
# One and two processes add the same float32 numbers in other orders, and Adam amplifies the
# last-bit differences over the steps; measured here: loss 1e-6, weights 1e-7, validation 2e-6.
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4
VAL_TOLERANCE = 1e-4
# A resumed run repeats the same computation in the same processes: equal but for the last bit.
RESUME_TOLERANCE = 1e-6

TINY_RUN = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context", "16",
            "--batch-size", "4", "--warmup-steps", "1", "--no-compile", "--sample-tokens", "0",
            "--steps", "8", "--eval-every", "4", "--checkpoint-every", "4"]
EVAL_TOKENS = ["--eval-tokens", "512"]  # not stored in the run: a resume gives it again


# --- ShardedSampler and rank_seed --------------------------------------------------------------

TOKENS = np.random.default_rng(0).integers(0, 65, 5000).astype(np.uint16)


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_the_ranks_rows_make_up_the_whole_batch(processes: int) -> None:
    batch_size, context, seed = 6, 8, 42
    whole = BatchSampler(TOKENS, batch_size, context, seed)
    ranks = [ShardedSampler(TOKENS, batch_size, context, seed, rank, processes)
             for rank in range(processes)]
    assert all(sampler.rows == batch_size // processes for sampler in ranks)
    for _ in range(2):  # the generators stay in step: every rank draws the whole batch
        inputs, targets = whole.sample()
        parts = [sampler.sample() for sampler in ranks]
        for part_inputs, part_targets in parts:
            assert part_inputs.shape == part_targets.shape == (batch_size // processes, context)
        np.testing.assert_array_equal(np.concatenate([np.array(x) for x, _ in parts]),
                                      np.array(inputs))
        np.testing.assert_array_equal(np.concatenate([np.array(y) for _, y in parts]),
                                      np.array(targets))


def test_a_sharded_sampler_refuses_an_uneven_batch_or_a_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        ShardedSampler(TOKENS, 5, 8, 0, rank=0, processes=2)
    with pytest.raises(ValueError, match="multiple of 4"):
        ShardedSampler(TOKENS, 6, 8, 0, rank=1, processes=4)
    for rank in (2, -1):
        with pytest.raises(ValueError, match=rf"rank {rank} is not in \[0, 2\)"):
            ShardedSampler(TOKENS, 4, 8, 0, rank=rank, processes=2)


def test_rank_0_keeps_the_one_process_dropout_seed_and_the_others_get_their_own() -> None:
    seed, step = 1337, 5
    assert rank_seed(seed, step, 0) == step_seed(seed, step)
    seeds = {rank_seed(seed, step, rank) for rank in range(4)}
    assert len(seeds) == 4
    assert rank_seed(seed, step, 1) != rank_seed(seed, step + 1, 1)


# --- launch --------------------------------------------------------------------------------------

def script(tmp_path: Path, body: str) -> list[str]:
    """The command that runs `body` as a Python script (mlxllm first: it loads OpenBLAS)."""
    path = tmp_path / "script.py"
    path.write_text("import sys\nimport time\n\nimport mlxllm  # noqa: F401\n"
                    "import mlx.core as mx\n\ngroup = mx.distributed.init()\n"
                    + textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_free_port_range_finds_consecutive_free_ports() -> None:
    import socket

    first = free_port_range(3)
    with contextlib.ExitStack() as stack:
        for port in range(first, first + 3):
            probe = stack.enter_context(socket.socket())
            probe.bind(("127.0.0.1", port))


@pytest.mark.parametrize("processes, expected", [(1, "0 1 1\n"), (2, "0 2 3\n1 2 3\n")])
def test_launch_joins_the_processes_and_gathers_their_output_in_rank_order(
        tmp_path: Path, processes: int, expected: str) -> None:
    command = script(tmp_path, """
        total = mx.distributed.all_sum(mx.array(group.rank() + 1), group=group)
        print(group.rank(), group.size(), total.item())
    """)
    result = launch(command, processes, timeout=LAUNCH_TIMEOUT)
    assert result.returncode == 0
    assert result.stdout == expected  # each rank's line, and the sum of rank + 1 over ranks


def test_averaging_by_hand_is_nn_average_gradients(tmp_path: Path) -> None:
    command = script(tmp_path, """
        import mlx.nn as nn
        from mlxllm.distributed import average_by_hand

        grads = {"w": mx.arange(4, dtype=mx.float32) * (group.rank() + 1),
                 "b": [mx.array([10.0 * group.rank()])]}
        mine = average_by_hand(grads, group)
        theirs = nn.average_gradients(grads, group=group)
        print(mine["w"].tolist(), mine["b"][0].tolist(),
              mx.array_equal(mine["w"], theirs["w"]).item(),
              mx.array_equal(mine["b"][0], theirs["b"][0]).item())
    """)
    lines = launch(command, 2, timeout=LAUNCH_TIMEOUT).stdout.splitlines()
    # w: (1 + 2) / 2 times 0..3; b: (0 + 10) / 2
    assert lines == ["[0.0, 1.5, 3.0, 4.5] [5.0] True True"] * 2


def test_launch_reports_a_failed_rank_and_stops_the_others(tmp_path: Path) -> None:
    command = script(tmp_path, """
        if group.rank() == 1:
            sys.exit(3)
        time.sleep(600)  # rank 0 would wait for ever: launch must stop it
    """)
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 1 exited with code 3"):
        launch(command, 2, timeout=LAUNCH_TIMEOUT)
    assert time.monotonic() - began < LAUNCH_TIMEOUT / 2  # stopped, not timed out


def test_launch_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        launch([sys.executable, "-c", "pass"], 0)


# --- mlxllm train --processes N ------------------------------------------------------------------

def test_without_processes_drops_only_the_processes_option() -> None:
    argv = ["train", "--run-dir", "runs/x", "--processes", "2", "--steps", "8",
            "--processes=3", "--batch-size", "4"]
    assert without_processes(argv) == ["train", "--run-dir", "runs/x", "--steps", "8",
                                       "--batch-size", "4"]
    assert without_processes(["train", "--steps", "2"]) == ["train", "--steps", "2"]


@contextlib.contextmanager
def captured_fds() -> Iterator[dict[str, str]]:
    """What this process and its children write to file descriptors 1 and 2 meanwhile."""
    captured: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            for name, file in (("out", out), ("err", err)):
                file.seek(0)
                captured[name] = file.read()


def record_launches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command `mlxllm train --processes N` launches from now on; a launch that does not
    end within LAUNCH_TIMEOUT is stopped and fails the test (TimeoutError) instead of hanging
    it."""
    commands: list[list[str]] = []
    real = mlxllm.distributed.launch

    def launch_with_timeout(command: list[str], processes: int,
                            **options: object) -> subprocess.CompletedProcess:
        commands.append(command)
        return real(command, processes, **{**options, "timeout": LAUNCH_TIMEOUT})

    monkeypatch.setattr(mlxllm.distributed, "launch", launch_with_timeout)
    return commands


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    return record_launches(monkeypatch)


@dataclass
class Runs:
    """A one-process and a two-process run of the same recipe, and what the second printed."""

    one: Path
    two: Path
    codes: tuple[int, int]
    out: str
    err: str
    commands: list[list[str]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """`mlxllm train` with --processes 1 and 2, in a working directory of their own."""
    home = tmp_path_factory.mktemp("runs")
    one, two = home / "one", home / "two"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cli_environment(tmp_path_factory.mktemp("cache")).items():
            patch.setenv(name, value)
        patch.chdir(home)
        commands = record_launches(patch)
        code_one = main(["train", "--run-dir", str(one), "--processes", "1", *TINY_RUN,
                         *EVAL_TOKENS])
        assert not commands, "--processes 1 trains in this process"
        with captured_fds() as output:
            code_two = main(["train", "--run-dir", str(two), "--processes", "2", *TINY_RUN,
                             *EVAL_TOKENS])
    return Runs(one, two, (code_one, code_two), output["out"], output["err"], commands)


def weights_of(run_dir: Path) -> dict[str, np.ndarray]:
    _, weights, _ = read_checkpoint(latest_checkpoint(run_dir))
    return {name: np.array(weight) for name, weight in weights.items()}


def test_a_two_process_run_is_launched_and_trains_as_one_process_does(runs: Runs) -> None:
    assert runs.codes == (0, 0), runs.err
    assert len(runs.commands) == 1
    command = runs.commands[0]
    assert command[:3] == [sys.executable, "-m", "mlxllm.cli"]
    assert "--processes" not in command and command[3:6] == ["train", "--run-dir", str(runs.two)]
    one, two = read_run(runs.one).history, read_run(runs.two).history
    assert one["step"] == two["step"] == list(map(float, range(1, 9)))
    assert one["eval_step"] == two["eval_step"] == [4.0, 8.0]
    np.testing.assert_allclose(two["learning_rate"], one["learning_rate"], rtol=1e-6)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=0, atol=LOSS_TOLERANCE)
    np.testing.assert_allclose(two["grad_norm"], one["grad_norm"], rtol=0, atol=LOSS_TOLERANCE)
    np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=0, atol=VAL_TOLERANCE)
    assert one["loss"][-1] < one["loss"][0]  # it trained: the comparison is not of two no-ops
    first, second = weights_of(runs.one), weights_of(runs.two)
    assert first.keys() == second.keys()
    for name, weight in first.items():
        np.testing.assert_allclose(second[name], weight, rtol=0, atol=WEIGHT_TOLERANCE,
                                   err_msg=name)
    records = [read_checkpoint(latest_checkpoint(run), optimizer=False)[0]
               for run in (runs.one, runs.two)]
    for part in ("model", "train", "tokenizer_sha256", "sampler"):
        assert records[0][part] == records[1][part], part


def test_only_rank_0_writes_and_reports(runs: Runs) -> None:
    def names(run_dir: Path) -> list[str]:
        return sorted(path.name for path in run_dir.iterdir())

    assert names(runs.two) == names(runs.one) == [
        "latest", "step-0000004", "step-0000008", "tokenizer.txt"]
    assert sorted(path.name for path in runs.two.parent.iterdir()) == ["one", "two"]
    assert "data parallel: 2 processes, each 2 of the 4 windows of a step" in runs.out
    evaluations = [line.split()[1] for line in runs.out.splitlines() if line.startswith("step ")]
    assert evaluations == ["4", "8"], runs.out  # not once per rank
    assert runs.out.count("done: ") == 1
    assert runs.err.count("8/8") == 1, runs.err  # one progress bar


def test_a_two_process_run_resumes_as_it_would_have_gone_on(runs: Runs,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            launches: list[list[str]],
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    for name, value in cli_environment(tmp_path / "cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "resumed"
    shutil.copytree(runs.two, copy)
    shutil.rmtree(copy / "step-0000008")
    (copy / "latest").write_text("step-0000004\n")
    code = main(["train", "--run-dir", str(copy), "--resume", "--processes", "2",
                 *EVAL_TOKENS, "--sample-tokens", "0"])
    assert code == 0, capsys.readouterr().err
    assert len(launches) == 1 and "--resume" in launches[0]
    assert latest_checkpoint(copy).name == "step-0000008"
    resumed, straight = read_run(copy).history, read_run(runs.two).history
    assert resumed.keys() == straight.keys()
    for name, values in straight.items():
        assert len(resumed[name]) == len(values), name
        np.testing.assert_allclose(resumed[name], values, rtol=0, atol=RESUME_TOLERANCE,
                                   err_msg=name)
    resumed_weights, straight_weights = weights_of(copy), weights_of(runs.two)
    for name, weight in straight_weights.items():
        np.testing.assert_allclose(resumed_weights[name], weight, rtol=0,
                                   atol=RESUME_TOLERANCE, err_msg=name)


def test_a_batch_that_does_not_split_fails_in_every_process_and_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launches: list[list[str]],
        capfd: pytest.CaptureFixture[str]) -> None:
    for name, value in cli_environment(tmp_path / "cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    flags = [*TINY_RUN, *EVAL_TOKENS]
    flags[flags.index("--batch-size") + 1] = "5"
    code = main(["train", "--run-dir", "uneven", "--processes", "2", *flags])
    assert code == 2  # rank 0's code; and it returned: a hung rank would have raised
    assert len(launches) == 1
    err = capfd.readouterr().err  # the ranks' own stderr
    assert "mlxllm: error: cannot train this configuration: batch_size=5" in err, err
    assert not list((tmp_path / "uneven").glob("step-*"))



def test_a_diverging_two_process_run_is_recorded_and_reported_by_rank_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launches: list[list[str]],
        capfd: pytest.CaptureFixture[str]) -> None:
    """Rank 1 stops at once on the loss they share; rank 0 gets the launcher's grace period to
    write failure.json and report, so the exit code is the divergence's, not a kill's."""
    for name, value in cli_environment(tmp_path / "cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    flags = [*TINY_RUN, *EVAL_TOKENS, "--learning-rate", "1e9", "--eval-every", "1",
             "--checkpoint-every", "1", "--steps", "12"]
    code = main(["train", "--run-dir", "diverged", "--processes", "2", *flags])
    assert code == 1, capfd.readouterr().err
    assert (tmp_path / "diverged" / "failure.json").is_file()
    assert "the run diverged" in capfd.readouterr().err
    assert not (tmp_path / "diverged" / ".lock").exists()


def test_fit_scaling_recovers_a_known_law() -> None:
    """Losses made from a known law on a 3 x 3 grid give back its constants (the exponents
    to the grid's step, the rest to what that step allows)."""
    from mlxllm.distributed import fit_scaling, scaling_loss

    truth = (1.2, 40.0, 0.35, 90.0, 0.45)
    params, tokens = (np.array(values, dtype=np.float64) for values in zip(
        *[(n, d) for n in (2e4, 1e5, 8e5) for d in (1e5, 4e5, 2e6)]))
    losses = np.array([scaling_loss(truth, n, d) for n, d in zip(params, tokens)])
    fit = fit_scaling(params, tokens, losses, np.arange(0.05, 1.01, 0.05))
    assert fit[2] == pytest.approx(0.35) and fit[4] == pytest.approx(0.45)
    assert fit[0] == pytest.approx(1.2, abs=1e-6)
    assert fit[1] == pytest.approx(40.0, rel=1e-6) and fit[3] == pytest.approx(90.0, rel=1e-6)
    assert scaling_loss(fit, 5e6, 1e8) == pytest.approx(scaling_loss(truth, 5e6, 1e8))
