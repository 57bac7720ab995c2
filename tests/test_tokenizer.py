"""mlxllm.tokenizer and the tokenized dataset: round trips, training, files, specials."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxllm.data import BatchSampler, encode_splits, load_corpus, nats_per_char
from mlxllm.tokenizer import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    SpecialTokenError,
    TokenizerFileError,
    train_bpe_fast,
    train_bpe_plain,
)

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die "
    "than to famish?\n\nAll:\nResolved. resolved.\n"
    "naïve café, 東京, emoji 🤖🎭, tabs\tand   spaces\r\n"
) * 8
ENDOFTEXT = "<|endoftext|>"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(SAMPLE, vocab_size=300, special_tokens=[ENDOFTEXT])


unicode_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200
) | st.sampled_from(["", " " * 50, "a" * 5000, "\u0301" * 7, "e\u0301\u0302",
                     "\x00\x01\x7f", "🤖" * 40, "東京タワー", "\t\n\r\x0b\x0c"])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=unicode_text)
def test_bpe_round_trips_any_unicode(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(sorted(set(SAMPLE))), max_size=200))
def test_char_tokenizer_round_trips_its_alphabet(text: str) -> None:
    tokenizer = CharTokenizer.train(SAMPLE, vocab_size=None)
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_char_tokenizer_names_an_unknown_character() -> None:
    tokenizer = CharTokenizer.train("abc", vocab_size=None)
    with pytest.raises(ValueError, match="z"):
        tokenizer.encode("abz")


def test_textbook_example_aaabdaaabac() -> None:
    """The classic example: aa -> Z, then ab -> Y, then ZY -> X ("XdXac")."""
    chunks = [b"aaabdaaabac"]
    merges = train_bpe_plain(chunks, 3)
    a, b = ord("a"), ord("b")
    assert merges == [(a, a), (a, b), (256, 257)]
    assert train_bpe_fast(chunks, 3) == merges


def test_naive_and_fast_trainers_agree_on_real_text() -> None:
    import regex

    text = load_corpus()[:20_000]
    chunks = [m.encode("utf-8") for m in regex.findall(GPT2_SPLIT_PATTERN, text)]
    assert train_bpe_plain(chunks, 60) == train_bpe_fast(chunks, 60)


def test_training_is_deterministic() -> None:
    first = BPETokenizer.train(SAMPLE, vocab_size=320)
    second = BPETokenizer.train(SAMPLE, vocab_size=320)
    assert first.fingerprint() == second.fingerprint()
    assert first.encode(SAMPLE) == second.encode(SAMPLE)


def test_save_load_gives_identical_encodings(bpe: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "shakespeare.bpe"
    bpe.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.vocab_size == bpe.vocab_size
    assert loaded.fingerprint() == bpe.fingerprint()
    text = SAMPLE + ENDOFTEXT + "tail"
    assert loaded.encode(text, allowed_special="all") == bpe.encode(text, allowed_special="all")


def test_char_tokenizer_saves_and_loads(tmp_path: Path) -> None:
    tokenizer = CharTokenizer.train(SAMPLE, special_tokens=[ENDOFTEXT])
    tokenizer.save(tmp_path / "sample.char")
    loaded = CharTokenizer.load(tmp_path / "sample.char")
    assert loaded.fingerprint() == tokenizer.fingerprint() and loaded.chars == tokenizer.chars
    assert loaded.encode(SAMPLE + ENDOFTEXT, allowed_special="all") == tokenizer.encode(
        SAMPLE + ENDOFTEXT, allowed_special="all")


def first_merge_becomes(line: str) -> Callable[[str], str]:
    """A damage: the first merge line of a saved BPE file replaced by `line`."""
    def damage(text: str) -> str:
        lines = text.split("\n")
        at = next(i for i, old in enumerate(lines) if old.startswith("merges: ")) + 1
        return "\n".join(lines[:at] + [line] + lines[at + 1:])
    return damage


DAMAGES: dict[str, tuple[Callable[[str], str | bytes], str]] = {
    "half the file": (lambda text: text[: len(text) // 2], "truncated"),
    "cut inside the last merge": (lambda text: text[: text.rindex("\nend") - 1], "truncated"),
    "cut inside the end line": (lambda text: text[:-3], "line .* is 'e', not a section header"),
    "more after the end": (lambda text: text + "more\n", "more after its end"),
    "newer version": (lambda text: text.replace("mlxllm-bpe 1", "mlxllm-bpe 2", 1),
                      "another version"),
    "a character tokenizer": (lambda _: CharTokenizer.train("abc").file_text(),
                              "not 'mlxllm-bpe 1'"),
    "json": (lambda _: '{"model": {"type": "BPE"}}', "another kind of file"),
    "empty": (lambda _: "", "line 1 is ''"),
    "not utf-8": (lambda _: b"PK\x03\x04\xff\xfe", "not UTF-8"),
    "header without a count": (lambda text: re.sub(r"merges: \d+", "merges: many", text),
                               "not a section header"),
    "section missing": (lambda text: text.replace("specials: ", "extras: "),
                        "no section 'specials'"),
    "merge not two ids": (first_merge_becomes("12 x"), "invalid literal for int"),
    "merge of an id not made yet": (first_merge_becomes("999 1"), "does not exist yet"),
    "pattern not a regex": (lambda text: text.replace(GPT2_SPLIT_PATTERN, "("), r"missing \)"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_or_foreign_files_are_refused_with_the_reason(
        bpe: BPETokenizer, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.bpe"
    make, reason = DAMAGES[damage]
    content = make(bpe.file_text())
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(TokenizerFileError, match=f"damaged.bpe: .*{reason}"):
        BPETokenizer.load(path)


def test_special_tokens_are_refused_unless_allowed(bpe: BPETokenizer) -> None:
    text = f"hear me speak.{ENDOFTEXT}All:"
    with pytest.raises(SpecialTokenError, match=r"<\|endoftext\|>"):
        bpe.encode(text)
    special = bpe.encode(text, allowed_special="all")
    assert special == bpe.encode(text, allowed_special={ENDOFTEXT})
    assert bpe.vocab_size - 1 in special and special.count(bpe.vocab_size - 1) == 1
    as_text = bpe.encode(text, allowed_special="none")
    assert bpe.vocab_size - 1 not in as_text
    assert bpe.decode(special) == bpe.decode(as_text) == text


def test_special_tokens_registered_after_training() -> None:
    tokenizer = BPETokenizer.train(SAMPLE, vocab_size=280)
    size = tokenizer.vocab_size
    tokenizer.register_special_tokens(["<|pad|>"])
    assert tokenizer.vocab_size == size + 1
    assert tokenizer.encode("<|pad|>", allowed_special="all") == [size]


def test_invalid_utf8_decodes_with_replacement(bpe: BPETokenizer) -> None:
    robot = bpe.encode("🤖")
    first_byte_only = ["🤖".encode()[0]]  # one byte of a four-byte character
    assert bpe.decode(first_byte_only) == "\ufffd"
    assert bpe.decode(robot) == "🤖"


def test_encoded_splits_are_cached_uint16(bpe: BPETokenizer, tmp_path: Path) -> None:
    text = load_corpus()[:50_000]
    train, val = encode_splits(bpe, text, tmp_path)
    assert train.dtype == np.uint16 and val.dtype == np.uint16
    assert bpe.decode(train.tolist()) + bpe.decode(val.tolist()) == text
    cached = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert cached and any(bpe.fingerprint()[:8] in str(p) for p in tmp_path.rglob("*.npy"))
    again_train, _ = encode_splits(bpe, text, tmp_path)
    assert np.array_equal(train, again_train)


def test_batch_sampler_is_seeded_and_shifted() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    first = BatchSampler(tokens, batch_size=4, context=16, seed=7)
    second = BatchSampler(tokens, batch_size=4, context=16, seed=7)
    x, y = first.sample()
    x2, y2 = second.sample()
    assert x.shape == y.shape == (4, 16)
    assert (np.array(x) == np.array(x2)).all() and (np.array(y) == np.array(y2)).all()
    assert (np.array(y)[:, :-1] == np.array(x)[:, 1:]).all()


def test_nats_per_char_rescales_token_loss() -> None:
    assert nats_per_char(2.0, n_tokens=50, n_chars=100) == pytest.approx(1.0)
