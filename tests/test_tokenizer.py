"""The tokenizer: parity with OpenAI's CLIP ids, and a BPE trained on Shapes-world captions."""

import gzip
import importlib.metadata
import re

import pytest
import torch

from unclip.tokenizer import Tokenizer, bytes_to_unicode
from unclip.world import sample_scene


def _clip_vocab_path():
    try:
        files = importlib.metadata.files("open_clip_torch") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.name == "bpe_simple_vocab_16e6.txt.gz"]
    return found[0].locate() if found else None


VOCAB = _clip_vocab_path()
needs_vocab = pytest.mark.skipif(VOCAB is None, reason="CLIP's bpe_simple_vocab_16e6.txt.gz is not installed")


class _ReferenceBPE:
    """OpenAI's simple_tokenizer algorithm written out plainly (ASCII text only: \\p{L} -> [a-z])."""

    def __init__(self, path):
        merges = gzip.open(path).read().decode("utf-8").split("\n")[1: 49152 - 256 - 2 + 1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        byte_chars = bytes_to_unicode()
        self.byte_chars = byte_chars
        vocab = list(byte_chars.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges] + ["<|startoftext|>",
                                                                                      "<|endoftext|>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.pattern = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+")

    def _bpe(self, token):
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            first, second = word[i], word[i + 1]
            merged, j = [], 0
            while j < len(word):  # merge every occurrence of the best pair, left to right
                if j < len(word) - 1 and word[j] == first and word[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(word[j])
                    j += 1
            word = merged
        return word

    def encode(self, text):
        text = " ".join(text.split()).lower()
        ids = []
        for token in self.pattern.findall(text):
            token = "".join(self.byte_chars[b] for b in token.encode("utf-8"))
            ids += [self.encoder[t] for t in self._bpe(token)]
        return ids


@needs_vocab
def test_openai_ids_exactly():
    tok = Tokenizer.from_clip_bpe(VOCAB)
    assert tok.vocab_size == 49408 and tok.sot_id == 49406 and tok.eot_id == 49407
    assert tok("a diagram")[0, :5].tolist() == [49406, 320, 22697, 49407, 0]
    assert tok.encode("A photo of a cat.") == [320, 1125, 539, 320, 2368, 269]


@needs_vocab
def test_parity_with_an_independent_reference():
    tok, ref = Tokenizer.from_clip_bpe(VOCAB), _ReferenceBPE(VOCAB)
    texts = [sample_scene(split, i).caption for split in ("train", "novel") for i in range(150)] + [
        "Hello,   World!! 123", "don't stop: the 2nd-best isn't   bad", "a cat's toy (blue) & a dog's #1 ball",
        "UPPER lower MiXeD", "ellipsis... and -- dashes", "tabs\tand\nnewlines",
    ]
    for text in texts:
        assert tok.encode(text) == ref.encode(text), text


def _captions(n, split="train"):
    return [sample_scene(split, i).caption for i in range(n)]


@pytest.fixture(scope="module")
def shapes_tokenizer():
    return Tokenizer.train(_captions(3000), vocab_size=600, context_length=32)


def test_trained_bpe_round_trips_and_compresses(shapes_tokenizer):
    tok = shapes_tokenizer
    assert tok.vocab_size <= 600 and tok.eot_id == tok.vocab_size - 1
    for caption in _captions(200, "novel"):  # unseen captions, held-out colour-shape pairs
        ids = tok.encode(caption)
        assert tok.decode(ids) == caption
        assert len(ids) <= len(caption.split()) + 2  # whole words are single tokens, nearly always
    batch = tok(["a red circle", "three small blue stars on a black background"])
    assert batch.shape == (2, 32) and batch.dtype == torch.long
    assert batch[0, 0] == tok.sot_id and int(batch[0].argmax()) == 1 + len(tok.encode("a red circle"))


def test_context_truncation_and_refusal(shapes_tokenizer):
    long = " and ".join(["a red circle"] * 20)
    cut = shapes_tokenizer(long)
    assert cut.shape == (1, 32) and cut[0, -1] == shapes_tokenizer.eot_id
    with pytest.raises(ValueError, match="past the context of 32"):
        shapes_tokenizer(long, truncate=False)
    with pytest.raises(ValueError, match="not a string"):
        shapes_tokenizer([None])


def test_save_and_load_round_trip(shapes_tokenizer, tmp_path):
    shapes_tokenizer.save(tmp_path / "tok")
    loaded = Tokenizer.load(tmp_path / "tok")
    captions = _captions(50, "test")
    assert torch.equal(loaded(captions), shapes_tokenizer(captions))
    assert not any(p.suffix in (".pkl", ".pt") for p in (tmp_path / "tok").iterdir())
