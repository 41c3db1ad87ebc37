# mypy: allow-untyped-calls
"""Build the tiny random-weight Wan text-to-video checkpoint used on one machine and in tests.

The weights are random but deterministic (``torch.manual_seed(0)``), so two builds give the
same files. Everything is built locally, including the tokenizer: nothing is downloaded.

    python scripts/make_tiny_wan.py            # -> <repo>/models/tiny-wan
    python scripts/make_tiny_wan.py --out DIR --force
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = [
    "CORPUS",
    "DEFAULT_OUT",
    "build_tiny_wan",
    "checkpoint_size",
    "is_built",
    "main",
    "save_staged",
]

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "tiny-wan"
SEED = 0
MAX_SEQUENCE_LENGTH = 226  # Wan's text length; the pipeline pads prompts to it
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as UMT5 expects pad=0 and eos=1

# A small English corpus of video-prompt language; its words form the tokenizer's vocabulary.
CORPUS = """
a cinematic shot of a red fox running through a snowy forest at sunrise
a slow aerial drone shot over a mountain lake with mist and pine trees
a golden retriever puppy playing with a ball on green grass in the park
close up of a cup of coffee with steam rising on a wooden table in the morning
a timelapse of clouds moving over a city skyline at sunset with warm orange light
an astronaut walking on the surface of the moon in a white space suit
waves crashing against rocks on a beach during a storm with dark sky and rain
a cat sitting on a windowsill watching birds outside in soft natural light
a busy street in tokyo at night with neon signs and people walking in the rain
a paper boat floating down a small stream in a quiet village in spring
a woman dancing in a field of sunflowers wearing a blue dress in slow motion
a man riding a bicycle along a river path in autumn with yellow leaves falling
a spaceship flying past a giant planet with rings and bright stars in deep space
an old train crossing a stone bridge in the mountains with smoke and steam
a chef cooking pasta in a modern kitchen with fire and fresh vegetables
fireworks exploding over a harbor at night reflected in the calm water
a hummingbird hovering near a pink flower in a garden, macro shot, shallow depth of field
a herd of horses galloping across a desert at dusk, dust in the air
a snowy owl flying over a frozen river in winter, camera tracking shot
a child building a sandcastle on the beach under a bright summer sun
a robot painting a portrait in an art studio, soft light, high detail
a futuristic city with flying cars and tall glass towers, wide angle
an underwater scene with colorful fish swimming around a coral reef
a candle burning in a dark room, flickering flame, cozy and calm mood
a hot air balloon rising over green hills and a small farm at dawn
a slow pan across a library full of old books and dusty shelves
a panda eating bamboo in a bamboo forest, realistic, high quality, 4k
a lighthouse on a cliff with waves below and seagulls flying above
a close up of rain drops falling on a leaf, slow motion, detailed texture
a vintage car driving on a coastal road beside the ocean, film grain
a dragon flying over a medieval castle, epic fantasy, dramatic lighting
a jellyfish glowing in the dark ocean, blue and purple colors
a skateboarder doing a trick in an empty parking lot, handheld camera
a steaming bowl of ramen with chopsticks, top down view, studio lighting
a field of wheat moving in the wind under a cloudy sky, static camera
a girl reading a book under a large tree, leaves moving in a gentle breeze
a volcano erupting with lava flowing down the side at night
an eagle soaring above a canyon with a river far below, zoom out
a snowman in a front yard, snow falling, christmas lights on the house
a black and white photo style shot of a jazz band playing in a small club
low quality, blurry, distorted, static, worst quality, overexposed, bad anatomy,
ugly, deformed, jpeg artifacts, watermark, text, subtitles, extra fingers, still picture
"""


def _build_tokenizer(model_max_length: int) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    tok.train_from_iterator(CORPUS.strip().splitlines(), trainer=trainer)
    eos_id = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
    )


def t5_config_kwargs(tokenizer: Any, d_model: int) -> dict[str, Any]:
    """The tiny T5-style encoder settings shared by the tiny checkpoints."""
    return {
        "vocab_size": len(tokenizer),
        "d_model": d_model,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "dropout_rate": 0.0,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def tiny_umt5(tokenizer: Any, d_model: int) -> Any:
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(SEED)
    return UMT5EncoderModel(UMT5Config(**t5_config_kwargs(tokenizer, d_model)))


def tiny_wan_vae() -> Any:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    torch.manual_seed(SEED)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def tiny_wan_transformer(text_dim: int, *, in_channels: int = 16, **extra: Any) -> Any:
    import torch
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

    torch.manual_seed(SEED)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **extra,
    )


def _build_components() -> dict[str, Any]:
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
        FlowMatchEulerDiscreteScheduler,
    )

    tokenizer = _build_tokenizer(MAX_SEQUENCE_LENGTH)
    text_dim = 32
    return {
        "tokenizer": tokenizer,
        "text_encoder": tiny_umt5(tokenizer, text_dim),
        "vae": tiny_wan_vae(),
        "transformer": tiny_wan_transformer(text_dim),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


def is_built(out_dir: Path) -> bool:
    """Whether ``out_dir`` already holds a saved pipeline."""
    return (out_dir / "model_index.json").is_file()


def checkpoint_size(out_dir: Path) -> int:
    """Total bytes of the files under ``out_dir``."""
    return sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())


def build_tiny_wan(out_dir: Path = DEFAULT_OUT, *, force: bool = False) -> Path:
    """Build and save the tiny checkpoint to ``out_dir``; skip if present unless ``force``."""
    out_dir = out_dir.resolve()
    if is_built(out_dir) and not force:
        return out_dir
    if out_dir.exists() and not is_built(out_dir) and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty and holds no pipeline; not replacing it")

    from diffusers.pipelines.wan.pipeline_wan import WanPipeline

    return save_staged(WanPipeline(**_build_components()), out_dir)


def save_staged(pipe: Any, out_dir: Path) -> Path:
    """``pipe.save_pretrained`` next to ``out_dir``, then swapped in, so a half-written
    checkpoint never looks built."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        staged = Path(tmp) / "ckpt"
        pipe.save_pretrained(staged)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)

    out_dir: Path = args.out.resolve()
    if is_built(out_dir) and not args.force:
        print(f"already built: {out_dir} ({checkpoint_size(out_dir) / 1e6:.2f} MB)")
        return 0
    build_tiny_wan(out_dir, force=args.force)
    print(f"built {out_dir} ({checkpoint_size(out_dir) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
