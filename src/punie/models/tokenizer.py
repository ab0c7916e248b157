"""Build a Hugging Face ``tokenizer.json`` from a GGUF file's tokenizer metadata.

GGUF stores a byte-level BPE tokenizer as its vocabulary, merge list, token
types and a pre-tokenizer name (``tokenizer.ggml.pre``). The pre-tokenizer name
selects the splitting rules llama.cpp applies before BPE; each supported name is
mapped below to the same rules in the ``tokenizers`` library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from punie.errors import ModelError

# llama.cpp token types (llama_token_type): 3 = control, 4 = user defined.
_CONTROL, _USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_tokenizer(pre: str, source: Path) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "command-r"):
        # Every digit is its own token, then GPT-2's splitting rules.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("gpt-2", "gpt2", "default"):
        return byte_level
    if pre in ("llama3", "llama-bpe"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise ModelError(f"{source}: tokenizer pre-tokenizer {pre!r} is not supported yet "
                     "(supported: smollm, starcoder, refact, gpt2, llama-bpe). "
                     "Convert the original Hugging Face model with mlx_lm.convert instead.")


def build_tokenizer_json(metadata: dict[str, Any], source: Path) -> tuple[dict[str, Any], dict[int, str]]:
    """(tokenizer.json content, {id: special token}) from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(f"{source}: tokenizer model {kind!r} is not supported; punie imports byte-level "
                         "BPE ('gpt2') tokenizers from GGUF.")
    tokens: list[str] = list(metadata.get("tokenizer.ggml.tokens") or [])
    merges: list[str] = list(metadata.get("tokenizer.ggml.merges") or [])
    if not tokens or not merges:
        raise ModelError(f"{source}: the GGUF file has no tokenizer vocabulary or merges.")
    types_raw = metadata.get("tokenizer.ggml.token_type")
    types = types_raw.tolist() if types_raw is not None else [1] * len(tokens)

    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs: list[tuple[str, str]] = [(a, b) for a, _, b in (m.partition(" ") for m in merges)]
    bpe = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _pre_tokenizer(str(metadata.get("tokenizer.ggml.pre", "default")), source)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    special = {i: tokens[i] for i, t in enumerate(types) if t == _CONTROL}
    user = {i: tokens[i] for i, t in enumerate(types) if t == _USER_DEFINED}
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for _, t in sorted(special.items())])
    if user:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for _, t in sorted(user.items())])
    content = json.loads(tok.to_str())
    # The added tokens already exist in the vocabulary: check ids did not move.
    for entry in content.get("added_tokens", []):
        if vocab.get(entry["content"]) != entry["id"]:
            raise ModelError(f"{source}: special token {entry['content']!r} has an inconsistent id.")
    return content, special
