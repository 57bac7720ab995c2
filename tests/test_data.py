"""mlxllm.data: finding, downloading and checking the corpus, and the split."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlxllm.data import CORPUS_SHA256, CorpusNotFoundError, load_corpus, split_train_val

SHARED = Path(os.environ.get("MLXLLM_DATA", Path(__file__).parents[2] / "shared" / "data"))
CORPUS = SHARED / "tinyshakespeare.txt"
needs_corpus = pytest.mark.skipif(not CORPUS.exists(), reason="no local corpus copy")


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No corpus anywhere: empty data and cache directories, a dead download address."""
    monkeypatch.setenv("MLXLLM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MLXLLM_CORPUS_URL", "http://127.0.0.1:9/tinyshakespeare.txt")
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server (loopback only) serving files from a folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()


@needs_corpus
def test_loads_from_mlxllm_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXLLM_DATA", str(SHARED))
    text = load_corpus("tinyshakespeare")
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    assert hashlib.sha256(text.encode()).hexdigest() == CORPUS_SHA256


def test_missing_corpus_says_where_to_put_it(nowhere: Path) -> None:
    with pytest.raises(CorpusNotFoundError) as error:
        load_corpus("tinyshakespeare")
    message = str(error.value)
    assert str(nowhere / "data") in message
    assert str(nowhere / "cache" / "mlxllm") in message
    assert CORPUS_SHA256 in message


def test_corrupt_local_copy_is_refused(nowhere: Path) -> None:
    (nowhere / "data" / "tinyshakespeare.txt").write_text("not Shakespeare")
    with pytest.raises(CorpusNotFoundError, match="tinyshakespeare.txt"):
        load_corpus("tinyshakespeare")


@needs_corpus
def test_download_is_checked_and_cached(nowhere: Path, server: tuple[str, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    address, folder = server
    (folder / "input.txt").write_bytes(CORPUS.read_bytes())
    monkeypatch.setenv("MLXLLM_CORPUS_URL", f"{address}/input.txt")
    assert len(load_corpus("tinyshakespeare")) == 1_115_394
    cached = nowhere / "cache" / "mlxllm" / "tinyshakespeare.txt"
    assert cached.read_bytes() == CORPUS.read_bytes()
    monkeypatch.setenv("MLXLLM_CORPUS_URL", "http://127.0.0.1:9/gone.txt")
    assert load_corpus("tinyshakespeare").startswith("First Citizen:"), "served from cache"


def test_download_with_wrong_hash_leaves_nothing_behind(
        nowhere: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    address, folder = server
    (folder / "input.txt").write_text("a truncated or tampered file")
    monkeypatch.setenv("MLXLLM_CORPUS_URL", f"{address}/input.txt")
    with pytest.raises(CorpusNotFoundError):
        load_corpus("tinyshakespeare")
    cache = nowhere / "cache" / "mlxllm"
    assert not cache.exists() or not any(cache.iterdir())


def test_unknown_corpus_name() -> None:
    with pytest.raises(ValueError, match="tinyshakespeare"):
        load_corpus("war_and_peace")


def test_split_is_first_ninety_percent_then_the_rest() -> None:
    text = "".join(chr(65 + i % 26) for i in range(1000))
    train, val = split_train_val(text)
    assert (len(train), len(val)) == (900, 100) and train + val == text
