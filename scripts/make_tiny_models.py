# mypy: allow-untyped-calls
"""Build tiny random-weight checkpoints of the supported diffusers video families.

Each checkpoint is a real diffusers pipeline directory written with ``save_pretrained``, so
it loads through the same ``from_pretrained`` path as real weights. The weights are random
but deterministic (``torch.manual_seed``), and everything is built locally, tokenizers
included: nothing is downloaded.

    python scripts/make_tiny_models.py                  # all -> <repo>/models/tiny-<name>
    python scripts/make_tiny_models.py --only ltx --out DIR --force
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_wan import (
    _build_tokenizer,
    save_staged,
    t5_config_kwargs,
    tiny_umt5,
    tiny_wan_transformer,
    tiny_wan_vae,
)

from cinecloud.engine.catalog import LTX_SCHEDULER

__all__ = ["BUILDERS", "DEFAULT_OUT", "build", "checkpoint_size", "is_built", "main"]

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models"
SEED = 0
TEXT_DIM = 32


def _t5_encoder(tokenizer: Any) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(SEED)
    return T5EncoderModel(T5Config(**t5_config_kwargs(tokenizer, TEXT_DIM)))


# ---------------------------------------------------------------- LTX-Video


def _ltx_vae() -> Any:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_ltx import AutoencoderKLLTXVideo

    # LTX-Video's own compression (patch 4, three 2x stages: 32x spatial, 8x temporal).
    torch.manual_seed(SEED)
    return AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )


def _ltx_components() -> dict[str, Any]:
    import torch
    from diffusers.models.transformers.transformer_ltx import LTXVideoTransformer3DModel
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
        FlowMatchEulerDiscreteScheduler,
    )

    tokenizer = _build_tokenizer(128)
    text_encoder = _t5_encoder(tokenizer)
    torch.manual_seed(SEED)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=TEXT_DIM,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": _ltx_vae(),
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER),
    }


def _ltx() -> Any:
    from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline

    return LTXPipeline(**_ltx_components())


def _ltx_i2v() -> Any:
    from diffusers.pipelines.ltx.pipeline_ltx_image2video import LTXImageToVideoPipeline

    return LTXImageToVideoPipeline(**_ltx_components())


# ---------------------------------------------------------------- CogVideoX


def _cogvideox_components() -> dict[str, Any]:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX
    from diffusers.models.transformers.cogvideox_transformer_3d import (
        CogVideoXTransformer3DModel,
    )
    from diffusers.schedulers.scheduling_ddim_cogvideox import CogVideoXDDIMScheduler

    max_text = 226  # CogVideoX's text length; the transformer is built for it
    tokenizer = _build_tokenizer(max_text)
    text_encoder = _t5_encoder(tokenizer)
    # CogVideoX's compression: 8x spatial (four blocks), 4x temporal.
    torch.manual_seed(SEED)
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    torch.manual_seed(SEED)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=16,
        text_embed_dim=TEXT_DIM,
        num_layers=1,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=max_text,
    )
    # CogVideoX-2b's scheduler settings.
    scheduler = CogVideoXDDIMScheduler(
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "transformer": transformer,
        "scheduler": scheduler,
    }


def _cogvideox() -> Any:
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline

    return CogVideoXPipeline(**_cogvideox_components())


# ---------------------------------------------------------------- Wan image-to-video


def _clip_vision(hidden: int) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(SEED)
    encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=hidden,
            intermediate_size=16,
            projection_dim=hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=4,
        )
    )
    return encoder, CLIPImageProcessor(crop_size=32, size=32)


def _wan_i2v() -> Any:
    from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
        FlowMatchEulerDiscreteScheduler,
    )

    tokenizer = _build_tokenizer(512)
    text_encoder = tiny_umt5(tokenizer, TEXT_DIM)
    image_dim = 8
    image_encoder, image_processor = _clip_vision(image_dim)
    vae = tiny_wan_vae()
    # Wan 2.1 I2V: noise (16) + frame mask (4) + encoded conditioning video (16) channels.
    transformer = tiny_wan_transformer(TEXT_DIM, in_channels=36, image_dim=image_dim)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )


# ---------------------------------------------------------------- Stable Video Diffusion


def _svd() -> Any:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import (
        AutoencoderKLTemporalDecoder,
    )
    from diffusers.models.unets.unet_spatio_temporal_condition import (
        UNetSpatioTemporalConditionModel,
    )
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        StableVideoDiffusionPipeline,
    )
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(SEED)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32,),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,  # noise (4) + the encoded conditioning image (4)
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",),
        up_block_types=("CrossAttnUpBlockSpatioTemporal",),
        cross_attention_dim=32,
        num_attention_heads=4,
        projection_class_embeddings_input_dim=96,  # 3 added time ids x addition_time_embed_dim
        addition_time_embed_dim=32,
        num_frames=14,
    )
    # SVD's VAE compression: 8x spatial (four blocks; the encoder's group norm needs 32s).
    torch.manual_seed(SEED)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 32, 32, 32],
        down_block_types=["DownEncoderBlock2D"] * 4,
        latent_channels=4,
    )
    torch.manual_seed(SEED)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=8,
            projection_dim=32,  # the UNet's cross-attention width
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,  # the pipeline resizes the image to CLIP's 224 itself
            intermediate_size=37,
            patch_size=32,
        )
    )
    # SVD's scheduler settings.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
    )


# ---------------------------------------------------------------- HunyuanVideo


def _hunyuan_text() -> dict[str, Any]:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    # The pipeline pads the Llama prompt to 256 tokens after a 95-token template prefix.
    tokenizer = _build_tokenizer(256 + 95)
    tokenizer_2 = _build_tokenizer(77)  # CLIP's text length
    torch.manual_seed(SEED)
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=3,  # the pipeline reads the third-from-last hidden state
            hidden_act="gelu",
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        )
    )
    torch.manual_seed(SEED)
    text_encoder_2 = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer_2),
            hidden_size=8,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            hidden_act="gelu",
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
            bos_token_id=tokenizer_2.eos_token_id,
        )
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "tokenizer_2": tokenizer_2,
        "text_encoder_2": text_encoder_2,
    }


def _hunyuan() -> Any:
    import torch
    from diffusers.models.autoencoders.autoencoder_kl_hunyuan_video import (
        AutoencoderKLHunyuanVideo,
    )
    from diffusers.models.transformers.transformer_hunyuan_video import (
        HunyuanVideoTransformer3DModel,
    )
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import HunyuanVideoPipeline
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
        FlowMatchEulerDiscreteScheduler,
    )

    text = _hunyuan_text()
    # HunyuanVideo's compression (8x spatial, 4x temporal) and 2x2 patch.
    torch.manual_seed(SEED)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    torch.manual_seed(SEED)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )
    return HunyuanVideoPipeline(
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        **text,
    )


# ---------------------------------------------------------------- building

BUILDERS: dict[str, Callable[[], Any]] = {
    "ltx": _ltx,
    "cogvideox": _cogvideox,
    "wan-i2v": _wan_i2v,
    "ltx-i2v": _ltx_i2v,
    "svd": _svd,
    "hunyuan": _hunyuan,
}


def is_built(out_dir: Path) -> bool:
    """Whether ``out_dir`` already holds a saved pipeline."""
    return (out_dir / "model_index.json").is_file()


def checkpoint_size(out_dir: Path) -> int:
    """Total bytes of the files under ``out_dir``."""
    return sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())


def build(name: str, out_dir: Path, *, force: bool = False) -> Path:
    """Build the tiny ``name`` checkpoint into ``out_dir``; skip if present unless ``force``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(BUILDERS)}")
    out_dir = out_dir.resolve()
    if is_built(out_dir) and not force:
        return out_dir
    if out_dir.exists() and not is_built(out_dir) and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty and holds no pipeline; not replacing it")
    return save_staged(BUILDERS[name](), out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BUILDERS), help="build just this model")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parent directory")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)

    names = [args.only] if args.only else list(BUILDERS)
    for name in names:
        out_dir: Path = (args.out / f"tiny-{name}").resolve()
        verb = "already built" if is_built(out_dir) and not args.force else "built"
        build(name, out_dir, force=args.force)
        print(f"{verb}: {out_dir} ({checkpoint_size(out_dir) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
