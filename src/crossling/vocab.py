"""Character vocabulary from the training text only -> `Vocab`, HF `vocab.json`, dev/test OOV rates.

Token ids: `<pad>` = 0 (CTC blank), `<unk>` = 1, `|` = 2 (word delimiter), then the characters sorted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from crossling.atomic import read_json, write_json_atomic
from crossling.errors import DataError

PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"
SPECIAL_TOKENS = (PAD, UNK, WORD_DELIMITER)
DEFAULT_THRESHOLD = 1e-5  # relative frequency 0.001 %, the reference study's cut-off

# A data character equal to the word delimiter, or starting a special token, would be read by the
# tokenizer as that token; such characters get a stand-in instead of being merged with the token.
_COLLIDING = {"|": ["\u00a6", "\ue001"], "<": ["\u2039", "\ue002"]}


@dataclass(frozen=True)
class Vocab:
    """The characters a model can emit (besides the special tokens), and how data characters were mapped."""

    chars: tuple[str, ...]
    threshold: float = DEFAULT_THRESHOLD
    char_map: dict[str, str] = field(default_factory=dict)

    def tokens(self) -> dict[str, int]:
        """{token: id} as written to vocab.json."""
        return {token: i for i, token in enumerate((*SPECIAL_TOKENS, *self.chars))}


def collision_map(texts: Iterable[str]) -> dict[str, str]:
    """{colliding data char: stand-in} for every `|` or `<` in `texts`; stand-ins never occur in the data."""
    present = set().union(*(set(text) for text in texts))
    mapping = {}
    for char, candidates in _COLLIDING.items():
        if char in present:
            mapping[char] = next(c for c in candidates if c not in present)
    return mapping


def apply_char_map(text: str, char_map: dict[str, str]) -> str:
    return text.translate(str.maketrans(char_map)) if char_map else text


def build_vocab(train_texts: list[str], threshold: float = DEFAULT_THRESHOLD) -> Vocab:
    """Every non-space character whose relative frequency in `train_texts` is >= `threshold`.

    Texts are normalized already; colliding characters are counted under their stand-in."""
    if not 0 <= threshold < 1:
        raise DataError(f"vocabulary threshold must be in [0, 1), got {threshold}")
    char_map = collision_map(train_texts)
    counts = Counter(c for text in train_texts for c in apply_char_map(text, char_map) if c != " ")
    total = sum(counts.values())
    if total == 0:
        raise DataError("cannot build a vocabulary: the training text has no characters")
    chars = sorted(c for c, n in counts.items() if n / total >= threshold)
    return Vocab(chars=tuple(chars), threshold=threshold, char_map=char_map)


def oov_rate(texts: Iterable[str], vocab: Vocab) -> float:
    """Fraction of non-space characters (after the vocab's char map) that the vocabulary lacks."""
    known = set(vocab.chars)
    total = missing = 0
    for text in texts:
        for char in apply_char_map(text, vocab.char_map):
            if char != " ":
                total += 1
                missing += char not in known
    return missing / total if total else 0.0


def write_vocab_json(path: Path, vocab: Vocab) -> None:
    write_json_atomic(Path(path), vocab.tokens())


def read_vocab_json(path: Path) -> dict[str, int]:
    """Read and check a vocab.json written by `write_vocab_json`."""
    path = Path(path)
    try:
        tokens = read_json(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read vocabulary ({error})") from None
    if not isinstance(tokens, dict):
        raise DataError(f"{path}: expected a JSON object {{token: id}}, found {type(tokens).__name__}")
    for i, token in enumerate(SPECIAL_TOKENS):
        if tokens.get(token) != i:
            raise DataError(f"{path}: expected {token!r} to have id {i}, found {tokens.get(token)!r}")
    return tokens
