"""The real CLIP tokenizer (49408 tokens) as a transformers ``CLIPTokenizer``, built offline.

The CLIP BPE vocabulary ships inside the ``open-clip-torch`` wheel
(``open_clip/bpe_simple_vocab_16e6.txt.gz``); it is read without importing ``open_clip``, whose
``__init__`` needs torchvision. The toy model's tokenizers are built from it, and so are the
tokenizers of the random-weight CLIP checkpoints that tests write (:mod:`tdm_r1.testing`).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import Any

from tdm_r1.errors import MissingExtraError

#: Special tokens of the real CLIP vocabulary (ids 49406 and 49407); ``<|endoftext|>`` also pads.
CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> list[str]:
    """The byte -> printable-character table of byte-level BPE (GPT-2 / CLIP), in CLIP's order.

    Printable Latin-1 bytes map to themselves and come first; the remaining 68 bytes map to code
    points 256+ and follow, in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


def clip_vocab_path() -> Path:
    """Path of the CLIP BPE merges file inside the installed ``open-clip-torch`` wheel."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise MissingExtraError(
            "The offline CLIP tokenizer needs the CLIP BPE vocabulary shipped in the open-clip-torch wheel. "
            "Install it with: pip install 'tdmbench[clip]'  (or: pip install --no-deps open-clip-torch)"
        )
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise MissingExtraError(
            f"open-clip-torch is installed but {path} is missing; reinstall open-clip-torch"
        )
    return path


@functools.lru_cache(maxsize=2)
def clip_tokenizer(model_max_length: int = 77) -> Any:
    """The real CLIP tokenizer (49408 tokens) as a transformers ``CLIPTokenizer``, built offline.

    Vocabulary order (as in the original CLIP code): the 256 byte symbols, the same with ``</w>``,
    one token per merge (48894 merges), then the two special tokens. transformers 5 takes
    ``vocab=`` / ``merges=`` objects (its old ``vocab_file=`` keyword is silently ignored).
    Cached: callers that change the tokenizer must copy it first.
    """
    from transformers import CLIPTokenizer

    with gzip.open(clip_vocab_path(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_VOCAB_SIZE - 2 * 256 - 2 + 1]]
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [CLIP_BOS, CLIP_EOS]
    tok = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=merges,
        model_max_length=model_max_length,
        unk_token=CLIP_EOS,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=CLIP_EOS,
    )
    if len(tok) != CLIP_VOCAB_SIZE:  # transformers 4 silently ignored vocab= and gave 3 tokens
        raise RuntimeError(f"offline CLIP tokenizer has {len(tok)} tokens, expected {CLIP_VOCAB_SIZE}")
    return tok
