"""The CLIP BPE tokenizer and ComfyUI's prompt syntax, built from the vocabulary open_clip ships.

Neither transformers nor diffusers ships a CLIP vocabulary, and nothing may be fetched from a hub, so the
tokenizer is built from open-clip-torch's ``bpe_simple_vocab_16e6.txt.gz`` (the same merges OpenAI's CLIP and
Hugging Face's ``openai/clip-vit-large-patch14`` tokenizer use): ids are identical to ComfyUI's SD1/SDXL tokenizer,
e.g. ``"a photo of a cat"`` -> ``[49406, 320, 1125, 539, 320, 2368, 49407]``. It is a small byte-level BPE of our
own rather than ``transformers.CLIPTokenizer`` because in transformers 5 that class is the Rust "fast" tokenizer,
whose text clean-up differs from the Python tokenizer ComfyUI uses; here the clean-up follows the latter (as run
without ftfy, ComfyUI's default install): drop control characters, space out CJK ideographs, NFC, lower case.

ComfyUI's prompt rules implemented here (``comfy/sd1_clip.py``):

* weights: ``(text)`` multiplies the weight by 1.1 (nesting multiplies again), ``(text:1.3)`` sets it to 1.3,
  ``\\(`` and ``\\)`` are literal parentheses; an unbalanced parenthesis is ordinary text, never an error;
* each weighted segment is tokenized as one group; groups go into chunks of 75 tokens between BOS and EOS
  (77 in all). A group of 8 or more tokens is split at a chunk boundary; a shorter one moves whole to the next
  chunk. Each chunk is padded to 77 with a pad id that depends on the text model (EOS for CLIP-L, 0 for
  OpenCLIP-H/bigG);
* ``embedding:name`` (textual inversion) is not supported: like ComfyUI with a missing embedding file, the name is
  dropped with a warning and the rest of the segment is kept.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import math
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import regex

__all__ = [
    "BOS_ID",
    "CHUNK_TOKENS",
    "EOS_ID",
    "MAX_LENGTH",
    "ClipTokenizer",
    "WeightedChunk",
    "bpe_vocab_path",
    "get_tokenizer",
    "parse_weights",
    "tokenize_weighted",
]

log = logging.getLogger(__name__)

BOS_ID = 49406  # <|startoftext|>
EOS_ID = 49407  # <|endoftext|>
MAX_LENGTH = 77  # model_max_length of every SD text encoder: BOS + 75 tokens + EOS
CHUNK_TOKENS = MAX_LENGTH - 2
_LARGE_GROUP = 8  # ComfyUI's max_word_length: groups this long may be split across chunks
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_MERGES = 49152 - 256 - 2  # merges used by CLIP: the vocabulary is 256 bytes x2 + merges + 2 specials = 49408
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_CACHE_LIMIT = 50_000  # BPE results kept per process; cleared when full so a long-lived worker stays bounded

# (token id, weight) for each of the 77 positions of one chunk
WeightedChunk = list[tuple[int, float]]


def bpe_vocab_path() -> Path:
    """open_clip's shipped BPE merges file (installed with open-clip-torch; never downloaded).

    Found through the package's import spec, which does not import open_clip (and torch, timm with it).
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the CLIP tokenizer needs open-clip-torch, which ships its BPE vocabulary")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _VOCAB_FILE
        if path.is_file():
            return path
    raise RuntimeError(f"CLIP BPE vocabulary {_VOCAB_FILE} not found in open_clip; reinstall open-clip-torch")


@functools.cache
def _byte_symbols() -> tuple[tuple[int, str], ...]:
    """(byte, printable stand-in) pairs of byte-level BPE, in vocabulary order (GPT-2 / CLIP convention).

    Printable bytes stand for themselves and come first; the other bytes get code points from 256 up.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    return (*((b, chr(b)) for b in printable), *((b, chr(256 + n)) for n, b in enumerate(others)))


@functools.cache
def _symbol_of_byte() -> tuple[str, ...]:
    return tuple(s for _, s in sorted(_byte_symbols()))


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    """The text clean-up of the Python CLIP tokenizer without ftfy (what ComfyUI runs)."""
    out = []
    for ch in text:
        cp = ord(ch)
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif cp == 0 or cp == 0xFFFD or unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return " ".join(unicodedata.normalize("NFC", "".join(out)).split()).lower()


class ClipTokenizer:
    """Byte-level BPE over CLIP's vocabulary. ``encode`` gives ids without BOS/EOS; ``__call__`` adds them."""

    bos_id = BOS_ID
    eos_id = EOS_ID
    model_max_length = MAX_LENGTH

    def __init__(self, bpe_path: Path | None = None) -> None:
        path = bpe_path or bpe_vocab_path()
        with gzip.open(path) as file:
            lines = file.read().decode("utf-8").split("\n")[1 : _MERGES + 1]  # line 0 is a version header
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != _MERGES or any(len(m) != 2 for m in merges):
            raise RuntimeError(f"{path} is not CLIP's BPE merges file ({len(merges)} merges read)")
        symbols = [s for _, s in _byte_symbols()]
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), *_SPECIALS]
        self.vocab: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.vocab_size = len(vocab)  # 49408
        self._decoder = vocab
        self._ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}  # type: ignore[misc]
        self._cache: dict[str, list[int]] = {}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _bpe(self, word: str) -> list[int]:
        """Ids of one pre-tokenized word (already mapped to byte symbols), merging the best-ranked pair first."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if word in _SPECIALS:
            ids = [self.vocab[word]]
        else:
            parts = [*word[:-1], word[-1] + "</w>"]
            while len(parts) > 1:
                pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
                best = min(pairs, key=lambda p: self._ranks.get(p, math.inf))
                if best not in self._ranks:
                    break
                merged: list[str] = []
                i = 0
                while i < len(parts):
                    if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                        merged.append(parts[i] + parts[i + 1])
                        i += 2
                    else:
                        merged.append(parts[i])
                        i += 1
                parts = merged
            ids = [self.vocab[p] for p in parts]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS (``<|endoftext|>`` written in the text is the EOS id)."""
        symbols = _symbol_of_byte()
        ids: list[int] = []
        for word in _WORD_PATTERN.findall(_clean(text)):
            if word not in _SPECIALS:
                word = "".join(symbols[b] for b in word.encode("utf-8"))
            ids.extend(self._bpe(word))
        return ids

    def __call__(self, text: str) -> list[int]:
        return [BOS_ID, *self.encode(text), EOS_ID]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids (for messages and debugging); specials are written as their names."""
        byte_of = {s: b for b, s in _byte_symbols()}
        text = "".join(self._decoder[i] for i in ids if i not in (BOS_ID, EOS_ID)).replace("</w>", "\0")
        raw = bytes(ord(" ") if c == "\0" else byte_of[c] for c in text)
        return raw.decode("utf-8", errors="replace").strip()


@functools.cache
def get_tokenizer() -> ClipTokenizer:
    """The process-wide tokenizer (built once, ~0.1 s)."""
    return ClipTokenizer()


# --- prompt weights ------------------------------------------------------------------------------------------------

_OPEN, _CLOSE = "\0\2", "\0\1"  # stand-ins for escaped parentheses while the weights are parsed


def _split_top_level(text: str) -> list[str]:
    """Split into plain runs and top-level "(...)" groups; unmatched parentheses stay part of the plain text.

    Depth counting follows ComfyUI: a ")" without an opener drives the depth negative, after which parentheses
    are plain characters until the depth comes back to zero.
    """
    pieces: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch == "(" and depth == 0:
            if current:
                pieces.append(current)
            current = "("
            depth = 1
        elif ch == "(":
            current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for piece in _split_top_level(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner = piece[1:-1]
            inner_weight = weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    explicit = float(inner[colon + 1 :])
                except ValueError:
                    explicit = math.nan
                if math.isfinite(explicit):  # "(a:inf)" / "(a:nan)" stay text, as an unparsable weight does
                    inner_weight, inner = explicit, inner[:colon]
            out.extend(_weighted(inner, inner_weight))
        else:
            out.append((piece, weight))
    return out


def parse_weights(text: str) -> list[tuple[str, float]]:
    """``"a (cat:1.2) \\(b\\)"`` -> ``[("a ", 1.0), ("cat", 1.2), (" (b)", 1.0)]``; never raises."""
    escaped = text.replace("\\)", _CLOSE).replace("\\(", _OPEN)
    return [(segment.replace(_CLOSE, ")").replace(_OPEN, "("), weight) for segment, weight in _weighted(escaped, 1.0)]


_EMBEDDING = "embedding:"


def _pieces(segment: str) -> list[str]:
    """A weighted segment as ComfyUI tokenizes it: one piece, or split before each `` embedding:name``.

    Textual-inversion embeddings are not supported: the name is dropped with a warning (what ComfyUI does when
    the file is missing) and the text after it is kept as its own piece.
    """
    if _EMBEDDING not in segment:
        return [segment]
    parts = re.split(rf" {_EMBEDDING}|\n{_EMBEDDING}", segment)
    pieces = [parts[0]] + [_EMBEDDING + p for p in parts[1:]]
    out = []
    for piece in pieces:
        if piece.startswith(_EMBEDDING):
            words = piece[len(_EMBEDDING) :].split()
            name = words[0] if words else ""
            stripped = name.rstrip(",")
            log.warning("embedding:%s ignored: textual-inversion embeddings are not supported", stripped)
            rest = " ".join(words[1:])
            piece = f"{name[len(stripped) :]} {rest}" if stripped != name else rest
        if piece:
            out.append(piece)
    return out


def tokenize_weighted(text: str, pad_id: int, tokenizer: ClipTokenizer | None = None) -> list[WeightedChunk]:
    """Chunks of exactly 77 (token id, weight) pairs: BOS, up to 75 prompt tokens, EOS, ``pad_id`` padding.

    An empty prompt gives one chunk ``[BOS, EOS, pad...]``.
    """
    tok = tokenizer or get_tokenizer()
    groups: list[list[tuple[int, float]]] = []
    for segment, weight in parse_weights(text):
        for piece in _pieces(segment):
            ids = tok.encode(piece)
            if ids:
                groups.append([(i, weight) for i in ids])

    chunks: list[WeightedChunk] = []
    chunk: WeightedChunk = [(BOS_ID, 1.0)]

    def close(current: WeightedChunk) -> None:
        current.append((EOS_ID, 1.0))
        current.extend([(pad_id, 1.0)] * (MAX_LENGTH - len(current)))
        chunks.append(current)

    for group in groups:
        splittable = len(group) >= _LARGE_GROUP
        while group:
            room = MAX_LENGTH - 1 - len(chunk)  # places left before the EOS
            if len(group) <= room:
                chunk.extend(group)
                group = []
                continue
            if splittable:
                chunk.extend(group[:room])
                group = group[room:]
            close(chunk)
            chunk = [(BOS_ID, 1.0)]
    close(chunk)
    return chunks
