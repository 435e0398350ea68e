"""Tiny folders of the newer families, built from configs (nothing downloaded).

The sizes follow diffusers' own fast pipeline tests (``get_dummy_components()``): the
same classes, a few thousand parameters. T5 tokenizers are written here from a small word
vocabulary (a ``tokenizers`` word-level model with T5's ``</s>`` appended), saved as a
fast tokenizer so that ``AutoTokenizer`` reads them back.

- :func:`build_pixart`: PixArt-alpha or -Sigma (``PixArtTransformer2DModel`` with learned
  sigma, a T5 encoder, the tiny SD VAE, DDIM), 4 x 8 x 8 latents, 16 px images.
- :func:`build_chroma`: Chroma (FLUX blocks, a T5 encoder only, CFG), FLUX's VAE and
  schedule, 8 px images.
- :func:`build_auraflow`: AuraFlow (joint then single DiT blocks, a UMT5 encoder), the
  tiny SD VAE, flow matching with AuraFlow's shift, 16 px images.
- :func:`build_ldm`: LDM text-to-image (SD's tiny U-Net, the tiny SD VAE as ``vqvae/``,
  a 2-layer ``LDMBertModel`` as ``bert/`` with a ``BertTokenizer`` over a small word list).
- :func:`build_sana`: Sana (linear-attention DiT, a 1-layer Gemma-2 encoder, a three-level
  ``AutoencoderDC``, flow matching with Sana's test shift), 32 px images (the pipeline
  wants a multiple of 32).
- :func:`build_lumina2`: Lumina 2 (joint single-stream layers, grouped-query attention,
  a 1-layer Gemma-2), the tiny SD VAE, flow matching, 16 px images.
- :func:`build_kandinsky3`: Kandinsky 3 (its U-Net without a mid block, a T5 encoder, a
  one-level MoVQ ``VQModel``), DDIM, 16 px images at ``resolution=16``.
- :func:`build_hunyuandit`: HunyuanDiT (a 2-layer BERT and a T5, an 8x VAE as its
  pipeline's rotary grid assumes), DDIM, 64 px images.
- :func:`build_flux`: FLUX.1 dev (guidance embedding) or schnell (``FluxTransformer2DModel``
  on packed 2 x 2 patches, CLIP + T5, a one-level VAE with one latent channel and FLUX's
  scaling and shift factors, flow matching), 8 px images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import (
    AuraFlowPipeline,
    AuraFlowTransformer2DModel,
    AutoencoderKL,
    ChromaPipeline,
    ChromaTransformer2DModel,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
)
from tiny_dit import _quiet, _vae
from tiny_sd import WORDS, tokenizer
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

#: PixArt's transformer, as diffusers' fast PixArt tests build it (learned sigma).
PIXART = dict(
    sample_size=8,
    num_layers=2,
    patch_size=2,
    attention_head_dim=8,
    num_attention_heads=3,
    caption_channels=32,
    in_channels=4,
    cross_attention_dim=24,
    out_channels=8,
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
)
#: FLUX.1's transformer, as diffusers' fast FLUX tests build it.
FLUX = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=[4, 4, 8],
)
#: FLUX.1-dev's scheduler config: the shift grows with the number of image tokens.
FLUX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)
FLUX_VAE = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(4,),
    layers_per_block=1,
    latent_channels=1,
    norm_num_groups=1,
    use_quant_conv=False,
    use_post_quant_conv=False,
    shift_factor=0.0609,
    scaling_factor=1.5035,
)


def _saved(pipe, folder: Path):
    """``pipe`` written to ``folder`` by its own ``save_pretrained``; quiet from now on."""
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def t5_tokenizer(max_length: int = 512) -> PreTrainedTokenizerFast:
    """A word-level T5-style tokenizer: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, the letters,
    digits and :data:`WORDS`; ``</s>`` appended to every text."""
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for token in [*string.ascii_lowercase, *string.digits, *WORDS]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _t5(seed: int, d_model: int = 32) -> T5EncoderModel:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=64,
        d_model=d_model,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def build_pixart(folder: str | Path, seed: int = 0, sigma: bool = False):
    """Write a tiny PixArt-alpha (``sigma``: -Sigma) folder; returns its pipeline (DDIM)."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = PixArtTransformer2DModel(**PIXART)
        _quiet(transformer.proj_out)
        with torch.no_grad():  # a denoiser that listens to the prompt
            for name, module in transformer.named_modules():
                if name.endswith("attn2.to_out.0"):
                    module.weight.mul_(30)
        text_encoder = _t5(seed + 2)
        vae = _vae(seed + 1)
    pipe_class = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = pipe_class(
        tokenizer=t5_tokenizer(300 if sigma else 120),
        text_encoder=text_encoder,
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=DDIMScheduler(),
    )
    return _saved(pipe, folder)


def build_flux(folder: str | Path, seed: int = 0, guidance: bool = True) -> FluxPipeline:
    """Write a tiny FLUX.1 folder (``guidance``: dev's guidance embedding, else schnell's
    layout); returns its pipeline."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(**FLUX, guidance_embeds=guidance)
        _quiet(transformer.proj_out)
        with torch.no_grad():  # a denoiser that listens to the prompt
            transformer.context_embedder.weight.mul_(10)
        clip = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=2,
                pad_token_id=1,
                vocab_size=1000,
                hidden_act="gelu",
                projection_dim=32,
                max_position_embeddings=16,
            )
        ).eval()
        t5 = _t5(seed + 3)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**FLUX_VAE)
        with torch.no_grad():
            vae.decoder.conv_out.weight.mul_(0.3)
    with tempfile.TemporaryDirectory() as tmp:
        clip_tokenizer = tokenizer(Path(tmp))
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae.eval(),
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(32),  # FLUX pads T5 to min(512, this)
        transformer=transformer.eval(),
    )
    return _saved(pipe, folder)


#: Chroma's transformer, as diffusers' fast Chroma tests build it.
CHROMA = dict(
    patch_size=1,
    in_channels=4,
    num_layers=1,
    num_single_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    axes_dims_rope=[4, 4, 8],
    approximator_hidden_dim=32,
    approximator_layers=1,
    approximator_num_channels=16,
)


def build_chroma(folder: str | Path, seed: int = 0) -> ChromaPipeline:
    """Write a tiny Chroma folder; returns its pipeline."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = ChromaTransformer2DModel(**CHROMA)
        _quiet(transformer.proj_out)
        with torch.no_grad():  # a denoiser that listens to the prompt
            transformer.context_embedder.weight.mul_(10)
        t5 = _t5(seed + 3)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**FLUX_VAE)
        with torch.no_grad():
            vae.decoder.conv_out.weight.mul_(0.3)
    pipe = ChromaPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae.eval(),
        text_encoder=t5,
        tokenizer=t5_tokenizer(32),  # Chroma pads T5 to min(512, this)
        transformer=transformer.eval(),
    )
    return _saved(pipe, folder)


#: AuraFlow's transformer, as diffusers' fast AuraFlow tests build it.
AURAFLOW = dict(
    sample_size=8,
    patch_size=2,
    in_channels=4,
    num_mmdit_layers=1,
    num_single_dit_layers=2,
    attention_head_dim=8,
    num_attention_heads=4,
    caption_projection_dim=32,
    joint_attention_dim=32,
    out_channels=4,
    pos_embed_max_size=256,
)


def build_auraflow(folder: str | Path, seed: int = 0) -> AuraFlowPipeline:
    """Write a tiny AuraFlow folder; returns its pipeline."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = AuraFlowTransformer2DModel(**AURAFLOW)
        _quiet(transformer.proj_out)
        with torch.no_grad():  # a denoiser that listens to the prompt
            transformer.context_embedder.weight.mul_(10)
        torch.manual_seed(seed + 2)
        config = UMT5Config(
            vocab_size=64,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        text_encoder = UMT5EncoderModel(config).eval()
        vae = _vae(seed + 1)
    pipe = AuraFlowPipeline(
        tokenizer=t5_tokenizer(32),  # AuraFlow pads to min(256, this)
        text_encoder=text_encoder,
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.73),
    )
    return _saved(pipe, folder)


def _bert_tokenizer():
    """A word-piece BERT tokenizer over letters and :data:`WORDS`, 77 tokens at most."""
    import string

    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *WORDS]
        (Path(tmp) / "vocab.txt").write_text("\n".join(dict.fromkeys(words)) + "\n")
        return BertTokenizer(str(Path(tmp) / "vocab.txt"), model_max_length=77)


def build_ldm(folder: str | Path, seed: int = 0):
    """Write a tiny LDM text-to-image folder; returns its pipeline (DDIM)."""

    from diffusers import LDMTextToImagePipeline, UNet2DConditionModel
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import (
        LDMBertConfig,
        LDMBertModel,
    )
    from tiny_sd import UNET

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET)
        with torch.no_grad():
            unet.conv_out.weight.mul_(0.1)
            for name, module in unet.named_modules():
                if name.endswith("attn2.to_out.0"):
                    module.weight.mul_(30)
        bert = LDMBertModel(
            LDMBertConfig(
                vocab_size=64,
                encoder_layers=2,
                encoder_ffn_dim=64,
                encoder_attention_heads=2,
                head_dim=16,
                d_model=32,
            )
        ).eval()
        vae = _vae(seed + 1)
    bert_tokenizer = _bert_tokenizer()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = LDMTextToImagePipeline(
        vqvae=vae.eval(), bert=bert, tokenizer=bert_tokenizer, unet=unet.eval(), scheduler=scheduler
    )
    return _saved(pipe, folder)


def build_sana(folder: str | Path, seed: int = 0):
    """Write a tiny Sana folder; returns its pipeline."""
    from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=2,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=32,
            sample_size=8,
        )
        _quiet(transformer.proj_out)
        torch.manual_seed(seed + 1)
        vae = AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8, 8),
            decoder_block_out_channels=(8, 8, 8),
            encoder_qkv_multiscales=((), (), (5,)),
            decoder_qkv_multiscales=((), (), (5,)),
            encoder_layers_per_block=(1, 1, 1),
            decoder_layers_per_block=[1, 1, 1],
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        )
        torch.manual_seed(seed + 2)
        text_encoder = Gemma2Model(
            Gemma2Config(
                head_dim=16,
                hidden_size=32,
                initializer_range=0.02,
                intermediate_size=64,
                max_position_embeddings=8192,
                model_type="gemma2",
                num_attention_heads=2,
                num_hidden_layers=1,
                num_key_value_heads=2,
                vocab_size=64,
                attn_implementation="eager",
            )
        ).eval()
    pipe = SanaPipeline(
        tokenizer=t5_tokenizer(512),
        text_encoder=text_encoder,
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    return _saved(pipe, folder)


def _gemma(seed: int, hidden: int = 32):
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    return Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=hidden,
            intermediate_size=64,
            max_position_embeddings=8192,
            num_attention_heads=2,
            num_hidden_layers=2,
            num_key_value_heads=2,
            vocab_size=64,
            attn_implementation="eager",
        )
    ).eval()


def build_lumina2(folder: str | Path, seed: int = 0):
    """Write a tiny Lumina 2 folder; returns its pipeline."""
    from diffusers import Lumina2Pipeline, Lumina2Transformer2DModel

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = Lumina2Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            hidden_size=32,
            num_layers=2,
            num_refiner_layers=1,
            num_attention_heads=4,
            num_kv_heads=2,
            multiple_of=16,
            norm_eps=1e-5,
            axes_dim_rope=(4, 2, 2),
            axes_lens=(64, 16, 16),
            cap_feat_dim=32,
        )
        with torch.no_grad():  # a denoiser that listens to the prompt
            transformer.norm_out.linear_2.weight.mul_(0.1)
        text_encoder = _gemma(seed + 2)
        vae = _vae(seed + 1, scaling_factor=0.3611, shift_factor=0.1159)  # FLUX's VAE factors
    pipe = Lumina2Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=6.0),
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=t5_tokenizer(48),  # Lumina 2 pads to min(256, this)
    )
    return _saved(pipe, folder)


def build_kandinsky3(folder: str | Path, seed: int = 0):
    """Write a tiny Kandinsky 3 folder; returns its pipeline (DDIM)."""
    from diffusers import Kandinsky3Pipeline, Kandinsky3UNet, VQModel

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = Kandinsky3UNet(
            in_channels=4,
            time_embedding_dim=4,
            groups=2,
            attention_head_dim=4,
            layers_per_block=3,
            block_out_channels=(32, 64),
            cross_attention_dim=4,
            encoder_hid_dim=32,
        )
        with torch.no_grad():
            unet.conv_out.weight.mul_(0.1)
        torch.manual_seed(seed + 1)
        movq = VQModel(
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            in_channels=3,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            norm_type="spatial",
            num_vq_embeddings=12,
            out_channels=3,
            up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
            vq_embed_dim=4,
        )
        with torch.no_grad():  # images inside [-1, 1], not clipped, so comparisons see them
            movq.decoder.conv_out.weight.mul_(0.1)
        text_encoder = _t5(seed + 2)
    pipe = Kandinsky3Pipeline(
        unet=unet.eval(),
        scheduler=DDIMScheduler(
            beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=False
        ),
        movq=movq.eval(),
        text_encoder=text_encoder,
        tokenizer=t5_tokenizer(128),
    )
    return _saved(pipe, folder)


def build_hunyuandit(folder: str | Path, seed: int = 0):
    """Write a tiny HunyuanDiT folder; returns its pipeline (DDIM)."""

    from diffusers import HunyuanDiT2DModel, HunyuanDiTPipeline
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = HunyuanDiT2DModel(
            sample_size=8,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=3,
            in_channels=4,
            cross_attention_dim=32,
            cross_attention_dim_t5=32,
            pooled_projection_dim=16,
            hidden_size=24,
            activation_fn="gelu-approximate",
        )
        _quiet(transformer.proj_out)
        torch.manual_seed(seed + 2)
        bert = BertModel(
            BertConfig(
                vocab_size=64,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=77,
            )
        ).eval()
        t5 = _t5(seed + 3)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(  # four levels: the 8x VAE the pipeline's rotary grid assumes
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=64,
        )
        with torch.no_grad():
            vae.decoder.conv_out.weight.mul_(0.3)
    bert_tokenizer = _bert_tokenizer()
    pipe = HunyuanDiTPipeline(
        vae=vae.eval(),
        text_encoder=bert,
        tokenizer=bert_tokenizer,
        transformer=transformer.eval(),
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.03,
            beta_schedule="scaled_linear",
            prediction_type="v_prediction",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(256),
    )
    return _saved(pipe, folder)
