"""Architectures and noise schedule of the models this project builds itself."""

from __future__ import annotations

from typing import Any

#: v-prediction on linear betas rescaled to zero terminal SNR (Lin et al. 2024): at t = T-1
#: the model sees pure noise and must produce the image's mean colour itself.
ZERO_SNR_V_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "clip_sample": False,
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # 32x32 -> 16 -> 8 -> 4: the mid block sits at 4x4, a strong bottleneck for h edits.
    "shapes32": {
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (32, 64, 128, 128),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 16,
        "attention_head_dim": 32,
        "dropout": 0.0,
    },
    # 64x64 -> 32 -> 16 -> 8 -> 4, trained on Lit Shapes with the skips of the 4x4 and 8x8
    # levels cut (CUT_SKIPS): the up path sees those levels only through h (6.1M parameters).
    # 128 channels from 16x16 down keep hidden and skip channels in separate GroupNorm groups.
    "shapes64": {
        "sample_size": 64,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (32, 64, 128, 128, 128),
        "layers_per_block": 1,
        "down_block_types": (
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
        ),
        "up_block_types": (
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
        ),
        "norm_num_groups": 16,
        "attention_head_dim": 32,
        "dropout": 0.0,
    },
    # The 256px CelebA-HQ DDPM U-Net (google/ddpm-ema-celebahq-256, 114M parameters): used
    # with random weights by the GPU benchmarks, where only the cost of a pass matters.
    "celebahq256": {
        "sample_size": 256,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 128, 256, 256, 512, 512),
        "layers_per_block": 2,
        "down_block_types": (
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ),
        "up_block_types": (
            "UpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
        ),
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "norm_eps": 1e-6,
        "norm_num_groups": 32,
        "attention_head_dim": None,
    },
    # The test-only model: 16x16 RGB, mid block at 4x4, attention below 16x16.
    "tiny": {
        "sample_size": 16,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (16, 32, 32),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    },
    # The test-only Lit Shapes model: 16x16, equal widths so that every up block's skips
    # can be cut (as shapes64's 4x4 and 8x8 ones).
    "tiny-lit": {
        "sample_size": 16,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (16, 16, 16),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    },
}

#: The scene (``workbench.data.scenes``) each architecture is trained on.
SCENE_OF: dict[str, str] = {
    "shapes32": "shapes",
    "shapes64": "lit-shapes",
    "celebahq256": "shapes",
    "tiny": "shapes",
    "tiny-lit": "lit-shapes",
}

#: Up blocks whose skip connections are cut in training (``workbench.models.skips``).
CUT_SKIPS: dict[str, tuple[int, ...]] = {"shapes64": (0, 1), "tiny-lit": (0,)}
