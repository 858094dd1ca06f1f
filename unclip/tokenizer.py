"""Text -> token ids: byte-level BPE as CLIP uses it (Radford et al. 2021), on the `tokenizers` engine.

Two ways to get one:
- `Tokenizer.from_clip_bpe(path)` loads OpenAI's `bpe_simple_vocab_16e6.txt.gz` and reproduces OpenAI's
  token ids ("a diagram" -> [49406, 320, 22697, 49407]): 256 byte symbols, the same with the end-of-word
  mark "</w>", the first 48,894 merges, then <|startoftext|> and <|endoftext|> (49,408 ids).
- `Tokenizer.train(captions, vocab_size=...)` learns a BPE vocabulary of the same kind on a caption
  corpus (the Shapes world's, in seconds).
Text is cleaned as CLIP cleans it: HTML entities unescaped, whitespace runs collapsed, lower-cased
(OpenAI also runs ftfy, which only repairs broken Unicode and is left out here). A caption becomes
[SOT] tokens [EOT] zero-padded to a fixed context; the EOT id is the largest, so models may find it by
argmax, as CLIP does. Saved as the engine's own tokenizer.json (no pickle) plus unclip's settings.
"""

from __future__ import annotations

import gzip
import html
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as Engine

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenisation pattern (OpenAI simple_tokenizer.py), matched case-insensitively after lower-casing.
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_MERGES = 49152 - 256 - 2  # OpenAI keeps this many merges of the vocabulary file


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters, in its order: the printable
    bytes first (mapped to themselves), then the rest (mapped to chr(256), chr(257), ...). CLIP's token
    ids follow this order, so it matters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), 256))
    rest = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(rest)}


def _engine(model: models.BPE) -> Engine:
    engine = Engine(model)
    engine.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    engine.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    engine.decoder = decoders.Sequence([decoders.BPEDecoder(suffix="</w>"), decoders.ByteLevel()])
    return engine


class Tokenizer:
    def __init__(self, engine: Engine, *, context_length: int = 77):
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (SOT, a token, EOT), got {context_length}")
        self.engine, self.context_length = engine, context_length
        self.sot_id, self.eot_id = engine.token_to_id(SOT), engine.token_to_id(EOT)
        if self.sot_id is None or self.eot_id is None:
            raise ValueError("the tokenizer has no <|startoftext|> / <|endoftext|> tokens")
        if self.eot_id != engine.get_vocab_size() - 1:
            raise ValueError("<|endoftext|> must be the last id (models find it by argmax)")

    @property
    def vocab_size(self) -> int:
        return self.engine.get_vocab_size()

    # ----- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_clip_bpe(cls, path: str | os.PathLike, *, context_length: int = 77) -> Tokenizer:
        """OpenAI's CLIP vocabulary from its merges file (`bpe_simple_vocab_16e6.txt.gz`)."""
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1: CLIP_MERGES + 1]]
        if len(merges) != CLIP_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path} is not CLIP's BPE merges file (expected {CLIP_MERGES} merge lines)")
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        engine = _engine(models.BPE(vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges,
                                    end_of_word_suffix="</w>", continuing_subword_prefix=""))
        engine.add_special_tokens([SOT, EOT])  # already in the vocabulary: marks them special, keeps their ids
        return cls(engine, context_length=context_length)

    @classmethod
    def train(cls, captions: Iterable[str], *, vocab_size: int = 1024, context_length: int = 77) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of `vocab_size` ids (specials included) from a caption corpus.

        Not reproducible across processes: the engine breaks ties between equally frequent pairs in hash
        order. Save the result and reuse it (unclip ships its Shapes BPE in unclip/assets/shapes-bpe).
        """
        alphabet = sorted(set(bytes_to_unicode().values()))
        engine = _engine(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
        base = 2 * len(alphabet)  # every byte symbol, alone and word-final, as CLIP's vocabulary has them
        if vocab_size < base + 2:
            raise ValueError(f"vocab_size must be at least {base + 2} (the byte symbols and two specials)")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - 2, initial_alphabet=alphabet
                                      + [a + "</w>" for a in alphabet], end_of_word_suffix="</w>",
                                      show_progress=False, min_frequency=2)
        engine.train_from_iterator((clean(c) for c in captions), trainer=trainer)
        engine.add_special_tokens([SOT, EOT])
        return cls(engine, context_length=context_length)

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.engine.save(str(directory / "tokenizer.json"))
        (directory / "tokenizer_config.json").write_text(json.dumps({"context_length": self.context_length}))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        directory = Path(directory)
        settings = json.loads((directory / "tokenizer_config.json").read_text())
        return cls(Engine.from_file(str(directory / "tokenizer.json")), context_length=settings["context_length"])

    # ----- use -------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without SOT/EOT."""
        return self.engine.encode(clean(text), add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.engine.decode([i for i in ids if i not in (self.sot_id, self.eot_id, 0)] if ids else [])

    def __call__(self, texts: str | Sequence[str], *, truncate: bool = True) -> torch.Tensor:
        """(B, context_length) long tensor: SOT, tokens, EOT, then zeros.

        An over-long text is cut to fit, keeping EOT last (CLIP's behaviour), or, with truncate=False,
        refused with a ValueError that says how long it is.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"text {row} is a {type(text).__name__}, not a string")
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > self.context_length:
                if not truncate:
                    raise ValueError(f"text {row} is {len(ids)} tokens with SOT/EOT, past the context of "
                                     f"{self.context_length}: {text[:60]!r}...")
                ids = ids[: self.context_length - 1] + [self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def real_token_mask(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids as a Tokenizer writes them -> (B, T) bool, True from SOT through EOT, False on the padding
    after it: the EOT id is the largest, so argmax finds it (CLIP's convention)."""
    eot = tokens.argmax(dim=-1)  # (B,)
    return torch.arange(tokens.shape[1], device=tokens.device)[None] <= eot[:, None]


def clean(text: str) -> str:
    """CLIP's basic_clean + whitespace_clean (without ftfy): unescape HTML twice, collapse whitespace."""
    return " ".join(html.unescape(html.unescape(text)).split())
