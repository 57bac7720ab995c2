"""`mlxllm train` against bad luck and bad input: Ctrl-C while MLX compiles, a broken compile
cache, two trainers in one run directory, leftovers of killed saves, full disks of
checkpoints, and values that used to end in a traceback."""

# The fixture `mlxllm` comes from another test module, so ruff takes each use for a redefinition.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mlxllm.train as train_module
from mlxllm.checkpoint import latest_checkpoint
from mlxllm.cli import LOCK_FILE, RunDirLock, main
from tests.conftest import ROOT
from tests.test_checkpoint import dead_pid, edit_record, step_names
from tests.test_cli import Outcome, assert_error, mlxllm, tiny_run  # noqa: F401  (a fixture)
from tests.test_train import TINY_FLAGS, cli_environment, run_cli

COMPILED_FLAGS = [flag for flag in TINY_FLAGS if flag != "--no-compile"]


def start_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """`mlxllm ARGS` started in a session of its own, as from a terminal of its own: a
    SIGINT to its process group is a Ctrl-C, and reaches the compilers MLX starts too."""
    return subprocess.Popen([sys.executable, "-m", "mlxllm.cli", *args], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition: Callable[[], object], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def parse_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """What argparse prints when it rejects a value (it exits with code 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    assert stop.value.code == 2
    return capsys.readouterr().err


def cache_env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment with a private temporary directory, so a private MLX compile cache
    (never the one other processes share)."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**cli_environment(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}


def compiler_running(group: int) -> bool:
    """Whether g++'s compiler proper (cc1plus) runs in a process group, as MLX starts it."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().rsplit(")", 1)
        except OSError:  # the process ended
            continue
        if name.endswith("(cc1plus") and int(fields.split()[2]) == group:
            return True
    return False


def kernels(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob("mlx/*/cpu/lib*.so"))


# --- 1. Ctrl-C while the first step compiles; a broken compile cache -----------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MLX compiles with g++ on Linux")
def test_ctrl_c_while_the_first_step_compiles_ends_cleanly(tmp_path: Path) -> None:
    env = cache_env(tmp_path)  # an empty compile cache: the first step compiles its kernels
    process = start_cli(["train", *COMPILED_FLAGS, "--steps", "6"], tmp_path, env)
    wait_for(lambda: compiler_running(process.pid))
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted before the first step; nothing to save" in stderr
    assert not (tmp_path / "runs/baby/latest").exists()
    assert not (tmp_path / "runs/baby" / LOCK_FILE).exists()


COMPILE = ("import mlxllm, mlx.core as mx; mx.set_default_device(mx.cpu); "
           "print(mx.compile(lambda x: x * 3 + 1)(mx.arange(3.0)).tolist())")


def test_a_broken_compile_cache_entry_is_found_and_rebuilt(tmp_path: Path) -> None:
    env = {**os.environ, **cache_env(tmp_path)}
    compiled = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                              text=True, check=True)
    assert compiled.stdout.strip() == "[1.0, 4.0, 7.0]"
    (kernel,) = kernels(tmp_path)
    cut_short = kernel.with_name("libCutShort_contiguous.so")  # as a killed linker leaves one
    cut_short.write_bytes(kernel.read_bytes()[:4096])
    kernel.write_bytes(b"")  # as the issue found one after a Ctrl-C
    poisoned = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                              text=True)
    assert poisoned.returncode != 0 and "file too short" in poisoned.stderr  # MLX never recovers
    doctor = subprocess.run([sys.executable, "-m", "mlxllm.cli", "doctor", "--size", "64"],
                            env=env, capture_output=True, text=True)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "2 broken (mlxllm train removes them" in doctor.stdout
    assert f"{kernel} (empty)" in doctor.stdout and f"{cut_short} (truncated: 4,096 of" in (
        doctor.stdout)
    trained = run_cli(["train", *TINY_FLAGS, "--steps", "2"], tmp_path, env)
    assert trained.returncode == 0, trained.stderr
    for path in (kernel, cut_short):
        assert f"removed a broken entry of MLX's compile cache: {path}" in trained.stderr
    rebuilt = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True,
                             text=True, check=True)
    assert rebuilt.stdout.strip() == "[1.0, 4.0, 7.0]" and kernels(tmp_path) == [kernel]


def test_an_unloadable_kernel_is_a_clear_error_naming_the_file(
        mlxllm: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    kernel = tmp_path / "libCf4IBroadcast_strided_2.so"
    kernel.write_bytes(b"\x7fELF" + bytes(100))

    def broken_step(self: train_module.Trainer) -> None:
        raise RuntimeError(f"Could not load C++ shared library {kernel}: invalid ELF header")

    monkeypatch.setattr(train_module.Trainer, "one_step", broken_step)
    assert_error(mlxllm("train", *TINY_FLAGS, "--steps", "2"),
                 f"MLX could not load {kernel} from its compile cache (invalid ELF header)",
                 f"delete it (rm {kernel}) and run again")


def test_doctor_checks_the_corpus_and_the_compile_cache(tmp_path: Path) -> None:
    env = {**os.environ, **cache_env(tmp_path)}
    checked = subprocess.run([sys.executable, "-m", "mlxllm.cli", "doctor", "--size", "64"],
                             cwd=ROOT, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    corpus = Path(env["MLXLLM_DATA"]) / "tinyshakespeare.txt"
    assert f"{corpus} (SHA-256 as expected)" in checked.stdout
    assert "no broken entries" in checked.stdout
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "tinyshakespeare.txt").write_text("To be or not to be\n")
    cache = tmp_path / "tmp/mlx/0.32.4/cpu"
    cache.mkdir(parents=True)
    (cache / "libEmpty_contiguous.so").write_bytes(b"")
    checked = subprocess.run([sys.executable, "-m", "mlxllm.cli", "doctor", "--size", "64"],
                             cwd=ROOT, env={**env, "MLXLLM_DATA": str(wrong)},
                             capture_output=True, text=True)
    assert checked.returncode == 1
    assert f"{wrong / 'tinyshakespeare.txt'} has sha256" in checked.stdout
    assert "1 broken" in checked.stdout and "libEmpty_contiguous.so (empty)" in checked.stdout


# --- 2. One trainer at a time in a run directory -------------------------------------------------

def test_a_second_trainer_in_the_same_run_dir_is_refused(mlxllm: Callable[..., Outcome],
                                                         tmp_path: Path) -> None:
    first = start_cli(["train", *TINY_FLAGS, "--steps", "100000", "--checkpoint-every", "50000",
                       "--eval-every", "50000", "--run-dir", "dup"], tmp_path,
                      cli_environment(tmp_path / "cache"))
    try:
        assert "dup: a new run of" in first.stdout.readline()
        refused = mlxllm("train", *TINY_FLAGS, "--steps", "6", "--seed", "2", "--run-dir", "dup")
        assert_error(refused, f"dup is in use by another trainer (pid {first.pid})")
        assert_error(mlxllm("train", "--resume", "--run-dir", "dup"), f"pid {first.pid}")
    finally:
        os.killpg(first.pid, signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert not (tmp_path / "dup" / LOCK_FILE).exists()  # released on Ctrl-C
    with RunDirLock(tmp_path / "dup"):
        pass


def test_a_stale_lock_is_taken_over_and_every_exit_releases_it(
        mlxllm: Callable[..., Outcome], tmp_path: Path) -> None:
    run_dir = tmp_path / "runs/baby"
    run_dir.mkdir(parents=True)
    (run_dir / LOCK_FILE).write_text(f"{dead_pid()}\n")  # left by a trainer killed with -9
    tiny_run(mlxllm)
    assert not (run_dir / LOCK_FILE).exists()
    assert_error(mlxllm("train", "--resume", "--eval-tokens", "10"), "raise --eval-tokens")
    assert not (run_dir / LOCK_FILE).exists()
    with RunDirLock(run_dir):
        assert (run_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not (run_dir / LOCK_FILE).exists()


# --- 4. Leftovers of killed saves; old checkpoints -----------------------------------------------

def test_leftovers_of_killed_saves_are_removed_at_start(mlxllm: Callable[..., Outcome],
                                                        tmp_path: Path) -> None:
    tiny_run(mlxllm, "--steps", "9")
    run_dir = tmp_path / "runs/baby"
    (run_dir / "latest").write_text("step-0000003\n")
    dead, alive = dead_pid(), os.getppid()
    for pid in (dead, alive):
        (run_dir / f".step-0000006.partial-{pid}").mkdir()
    resumed = mlxllm("train", "--resume", "--eval-tokens", "512")
    assert resumed.code == 0, resumed.err
    assert f"removed .step-0000006.partial-{dead}, left by a process that was killed" in (
        resumed.err)
    assert sorted(path.name for path in run_dir.glob(".step-*")) == [
        f".step-0000006.partial-{alive}"]


def test_keep_prunes_old_checkpoints(mlxllm: Callable[..., Outcome], tmp_path: Path) -> None:
    tiny_run(mlxllm, "--steps", "12")
    assert step_names(tmp_path / "runs/baby") == ["step-0000006", "step-0000009", "step-0000012"]
    tiny_run(mlxllm, "--steps", "6", "--checkpoint-every", "1", "--keep", "2", "--run-dir", "two")
    assert step_names(tmp_path / "two") == ["step-0000005", "step-0000006"]
    tiny_run(mlxllm, "--steps", "6", "--keep", "0", "--run-dir", "all")
    assert step_names(tmp_path / "all") == ["step-0000003", "step-0000006"]


# --- 5. Messages instead of tracebacks -----------------------------------------------------------

def test_out_of_range_numbers_are_clear_errors(mlxllm: Callable[..., Outcome],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert_error(mlxllm("train", *TINY_FLAGS, "--steps", "2", "--seed", "-1"),
                 "seed must be in [0, 2**64), got -1")
    tiny_run(mlxllm)
    for args, message in [
        (["generate", "--checkpoint", "runs/baby", "--seed", "-3"],
         "argument --seed: must be at least 0, got -3"),
        (["generate", "--checkpoint", "runs/baby", "--seed", str(2**64)],
         f"argument --seed: must be at most {2**64 - 1}"),
        (["generate", "--checkpoint", "runs/baby", "--temperature", "nan"],
         "argument --temperature: must be a finite number, got 'nan'"),
        (["generate", "--checkpoint", "runs/baby", "--temperature", "inf"],
         "must be a finite number"),
        (["doctor", "--size", "-5"], "argument --size: must be at least 1, got -5"),
    ]:
        assert message in parse_error(capsys, *args), args


@pytest.mark.parametrize("edit, message", [
    ([], "state.json is damaged: not a JSON object"),
    (None, "state.json is damaged: not a JSON object"),
    (lambda record: {**record, "model": [1]}, "state.json is damaged: model is not a JSON object"),
], ids=["list", "null", "model"])
def test_a_damaged_record_is_a_clear_error(mlxllm: Callable[..., Outcome], tmp_path: Path,
                                           edit: object, message: str) -> None:
    tiny_run(mlxllm)
    edit_record(tmp_path / "runs/baby/step-0000006", edit)
    assert_error(mlxllm("generate", "--checkpoint", "runs/baby"), message)
    assert_error(mlxllm("train", "--resume"), message)


def test_an_edited_record_is_refused_on_resume(mlxllm: Callable[..., Outcome],
                                               tmp_path: Path) -> None:
    tiny_run(mlxllm)
    checkpoint = tmp_path / "runs/baby/step-0000006"

    def deeper(record: dict) -> dict:
        record["model"]["n_layer"] = 2
        return record

    edit_record(checkpoint, deeper)
    assert_error(mlxllm("train", "--resume"), "the weights do not fit the model that "
                 "state.json describes")
    edit_record(checkpoint, lambda record: {**record, "model": {**record["model"], "n_layer": 1}})
    edit_record(checkpoint, lambda record: {key: value for key, value in record.items()
                                            if key != "sampler"})
    assert_error(mlxllm("train", "--resume"), "state.json is damaged: it has no sampler")


def test_generate_needs_only_the_weights(mlxllm: Callable[..., Outcome], tmp_path: Path) -> None:
    tiny_run(mlxllm)
    optimizer = tmp_path / "runs/baby/step-0000006/optimizer.safetensors"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    generated = mlxllm("generate", "--checkpoint", "runs/baby", "--tokens", "5")
    assert generated.code == 0, generated.err
    assert_error(mlxllm("train", "--resume"), f"{Path('runs/baby/step-0000006')}/optimizer."
                 "safetensors is missing or differs")


def test_resume_names_what_it_ignores_and_what_is_wrong(mlxllm: Callable[..., Outcome],
                                                        tmp_path: Path) -> None:
    tiny_run(mlxllm, "--steps", "9")
    (tmp_path / "runs/baby/latest").write_text("step-0000006\n")
    resumed = mlxllm("train", "--resume", "--preset", "full", "--run-dir", "runs/baby",
                     "--eval-tokens", "512")
    assert resumed.code == 0, resumed.err
    assert "--preset full is not applied with --resume" in resumed.err
    assert_error(mlxllm("train", "--resume", "--preset", "full"), "runs/full does not exist")
    (tmp_path / "plain").write_text("not a run\n")
    assert_error(mlxllm("train", "--resume", "--run-dir", "plain"),
                 "--resume: plain is a file, not a run directory")


def test_a_second_ctrl_c_names_the_checkpoint_that_was_really_saved(
        mlxllm: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    save = train_module.save_checkpoint

    def second_ctrl_c_while_saving(run_dir: Path, model: object, optimizer: object,
                                   record: dict) -> Path:
        if record["step"] == 6:
            raise KeyboardInterrupt
        return save(run_dir, model, optimizer, record)

    monkeypatch.setattr(train_module, "save_checkpoint", second_ctrl_c_while_saving)
    stopped = mlxllm("train", *TINY_FLAGS, "--steps", "9", "--checkpoint-every", "3")
    assert stopped.code == 130
    assert "checkpoint saved" not in stopped.err
    assert (f"interrupted after step 6, before its checkpoint was saved; the last checkpoint "
            f"is {Path('runs/baby/step-0000003')}") in stopped.err
    assert "continue with: mlxllm train --run-dir runs/baby --resume" in stopped.err
    assert latest_checkpoint(tmp_path / "runs/baby").name == "step-0000003"
    assert json.loads((tmp_path / "runs/baby/step-0000003/state.json").read_text())["step"] == 3
