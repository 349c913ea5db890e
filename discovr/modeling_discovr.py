"""PyTorch DISCOVR models: the video encoder, its classification and segmentation heads, and the pretraining
objective."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, logging
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_discovr import DiscovrConfig
from .losses_discovr import (
    dino_cross_entropy,
    dino_teacher_targets,
    distributed_world,
    koleo_loss,
    sinkhorn,
    update_center,
)
from .masking_discovr import DiscovrMaskGenerator, DiscovrMasks

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class TransformerDims:
    """Sizes and regularisation of one stack of pre-norm transformer blocks (video encoder, decoder or image
    branch), so that each stack is built from its own settings."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    qkv_bias: bool
    layer_norm_eps: float
    hidden_act: str
    hidden_dropout_prob: float
    attention_dropout_prob: float

    @classmethod
    def video_encoder(cls, config: DiscovrConfig) -> TransformerDims:
        return cls(
            config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.qkv_bias, config.layer_norm_eps, config.hidden_act, config.hidden_dropout_prob,
            config.attention_probs_dropout_prob,
        )

    @classmethod
    def image_encoder(cls, config: DiscovrConfig) -> TransformerDims:
        return cls(
            config.image_hidden_size, config.image_num_hidden_layers, config.image_num_attention_heads,
            config.image_intermediate_size, config.image_qkv_bias, config.image_layer_norm_eps,
            config.image_hidden_act, config.image_hidden_dropout_prob, config.image_attention_probs_dropout_prob,
        )

    @classmethod
    def decoder(cls, config: DiscovrConfig) -> TransformerDims:
        # The decoder shares the video encoder's q/v-bias, LayerNorm, activation and dropout, as in VideoMAE.
        return cls(
            config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads,
            config.decoder_intermediate_size, config.qkv_bias, config.layer_norm_eps, config.hidden_act,
            config.hidden_dropout_prob, config.attention_probs_dropout_prob,
        )


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed VideoMAE sin-cos table of shape (num_positions, dim), computed in float64 then cast to float32."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * torch.div(torch.arange(dim), 2, rounding_mode="floor").to(torch.float64) / dim
    angles = position / torch.pow(10000.0, exponent)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32)


def gather_visible(tokens: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
    """Keep the unmasked tokens of each sample, in positional order: (B, N, D) -> (B, N_visible, D)."""
    batch_size, _, dim = tokens.shape
    return tokens[~bool_masked_pos].reshape(batch_size, -1, dim)


# What Transformers' own callers (Trainer, pipelines, generation utilities) may pass to any model's forward.
TRANSFORMERS_FORWARD_KWARGS = frozenset(TransformersKwargs.__annotations__)


def check_forward_kwargs(model_name: str, kwargs: dict, hint: str = "") -> None:
    """Raise `TypeError` naming every keyword that is neither an argument of the forward nor a Transformers
    convention: a misspelt or foreign argument must not be silently ignored."""
    unknown = sorted(set(kwargs) - TRANSFORMERS_FORWARD_KWARGS)
    if unknown:
        raise TypeError(
            f"{model_name}.forward() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}"
            + (f": {hint}" if hint else "")
        )


def check_bool_masked_pos(bool_masked_pos: torch.Tensor, batch_size: int, num_patches: int, name: str) -> None:
    """Raise `ValueError` unless the mask is (batch_size, num_patches) with the same masked count in every row."""
    if bool_masked_pos.dim() != 2 or tuple(bool_masked_pos.shape) != (batch_size, num_patches):
        raise ValueError(
            f"`{name}` must have shape (batch_size, num_patches) = ({batch_size}, {num_patches}), "
            f"got {tuple(bool_masked_pos.shape)}"
        )
    if bool_masked_pos.dtype != torch.bool:
        raise ValueError(f"`{name}` must be a bool tensor (True = masked), got dtype {bool_masked_pos.dtype}")
    counts = bool_masked_pos.sum(dim=1)
    if batch_size and not bool(torch.all(counts == counts[0])):
        raise ValueError(
            f"`{name}` must mask the same number of patches in every sample, got counts {counts.tolist()}"
        )
    if batch_size and int(counts[0]) == num_patches:
        raise ValueError(f"`{name}` masks all {num_patches} patches: at least one must stay visible")


class DiscovrPatchEmbeddings(nn.Module):
    """Tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch), tokens in (t, h, w) order."""

    def __init__(self, num_channels: int, hidden_size: int, patch_size: int, tubelet_size: int):
        super().__init__()
        self.projection = nn.Conv3d(
            num_channels, hidden_size,
            kernel_size=(tubelet_size, patch_size, patch_size),
            stride=(tubelet_size, patch_size, patch_size),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # (B, T, C, H, W) -> (B, C, T, H, W) for Conv3d, then (B, N, D).
        return self.projection(pixel_values.transpose(1, 2)).flatten(2).transpose(1, 2)


class DiscovrEmbeddings(nn.Module):
    """Patch embeddings, the fixed sin-cos position table (zero for CLS) and the CLS token."""

    def __init__(self, config: DiscovrConfig, hidden_size: int, num_frames: int, tubelet_size: int):
        super().__init__()
        self.num_frames = num_frames
        self.image_size = config.image_size
        self.num_channels = config.num_channels
        self.num_patches = (num_frames // tubelet_size) * config.num_patches_per_frame
        self.patch_embeddings = DiscovrPatchEmbeddings(config.num_channels, hidden_size, config.patch_size, tubelet_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        # Not persistent: the table is fixed, recomputed in `_init_weights`, and checked against the reference by the converter.
        self.register_buffer(
            "position_embeddings", sinusoid_position_table(self.num_patches, hidden_size).unsqueeze(0), persistent=False
        )

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        expected = (self.num_frames, self.num_channels, self.image_size, self.image_size)
        if pixel_values.dim() != 5 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                "`pixel_values` must have shape (batch_size, num_frames, num_channels, height, width) = "
                f"(B, {', '.join(map(str, expected))}), got {tuple(pixel_values.shape)}"
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        visible_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens with CLS first: `(B, 1 + N, D)`, or `(B, 1 + N_visible, D)` with `bool_masked_pos` `(B, N)`.

        `visible_positions` `(B, V, N_vis)` keeps V views of every clip instead, each with its own visible tokens
        (positional order), from one patch embedding: `(B * V, 1 + N_vis, D)`.
        """
        embeddings = self.patch_embeddings(pixel_values.to(self.patch_embeddings.projection.weight.dtype))
        embeddings = embeddings + self.position_embeddings.to(embeddings.dtype)
        if bool_masked_pos is not None and visible_positions is not None:
            raise ValueError("Give `bool_masked_pos` or `visible_positions`, not both")
        if bool_masked_pos is not None:
            embeddings = gather_visible(embeddings, bool_masked_pos)
        elif visible_positions is not None:
            embeddings = gather_views(embeddings, visible_positions)
        cls_tokens = self.cls_token.to(embeddings.dtype).expand(embeddings.shape[0], -1, -1)
        return torch.cat((cls_tokens, embeddings), dim=1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention on (B, H, L, Dh) inputs; returns (B, L, H, Dh) and the weights."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class DiscovrSelfAttention(nn.Module):
    """Multi-head self-attention with separate `query`/`key`/`value` projections (the key has no bias)."""

    def __init__(self, config: DiscovrConfig, dims: TransformerDims):
        super().__init__()
        self.config = config
        self.num_heads = dims.num_heads
        self.head_dim = dims.hidden_size // dims.num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.dropout_prob = dims.attention_dropout_prob
        self.query = nn.Linear(dims.hidden_size, dims.hidden_size, bias=dims.qkv_bias)
        self.key = nn.Linear(dims.hidden_size, dims.hidden_size, bias=False)
        self.value = nn.Linear(dims.hidden_size, dims.hidden_size, bias=dims.qkv_bias)
        self.proj = nn.Linear(dims.hidden_size, dims.hidden_size)
        self.proj_dropout = nn.Dropout(dims.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention output and, with eager attention, its weights (recorded for `output_attentions`)."""
        head_shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        query, key, value = (
            projection(hidden_states).view(head_shape).transpose(1, 2) for projection in (self.query, self.key, self.value)
        )

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            is_causal=False,
            scaling=self.scaling,
            dropout=self.dropout_prob if self.training else 0.0,
        )
        attn_output = attn_output.reshape(*hidden_states.shape[:-1], -1)
        return self.proj_dropout(self.proj(attn_output)), attn_weights


class DiscovrMLP(nn.Module):
    """Two-layer feed-forward block."""

    def __init__(self, dims: TransformerDims):
        super().__init__()
        self.fc1 = nn.Linear(dims.hidden_size, dims.intermediate_size)
        self.act = ACT2FN[dims.hidden_act]
        self.fc2 = nn.Linear(dims.intermediate_size, dims.hidden_size)
        self.dropout = nn.Dropout(dims.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class DiscovrLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, config: DiscovrConfig, dims: TransformerDims):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)
        self.attention = DiscovrSelfAttention(config, dims)
        self.norm2 = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)
        self.mlp = DiscovrMLP(dims)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attn_output, _ = self.attention(self.norm1(hidden_states))
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.norm2(hidden_states))


class DiscovrEncoder(nn.Module):
    """A stack of `DiscovrLayer`s."""

    def __init__(self, config: DiscovrConfig, dims: TransformerDims):
        super().__init__()
        self.layer = nn.ModuleList([DiscovrLayer(config, dims) for _ in range(dims.num_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor) -> BaseModelOutput:
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)


class DiscovrPreTrainedModel(PreTrainedModel):
    config: DiscovrConfig
    config_class = DiscovrConfig
    base_model_prefix = "discovr"
    main_input_name = "pixel_values"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DiscovrEmbeddings", "DiscovrLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # What `output_hidden_states` and `output_attentions` record (Transformers' output capturing).
    _can_record_outputs = {"hidden_states": DiscovrLayer, "attentions": DiscovrSelfAttention}

    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal Linear/Conv weights, unit LayerNorms and BatchNorms, and every DISCOVR-specific tensor."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm3d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm3d)):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, DiscovrEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.copy_(
                module.position_embeddings,
                sinusoid_position_table(*module.position_embeddings.shape[1:]).unsqueeze(0),
            )
        elif isinstance(module, DiscovrDecoder):
            init.copy_(module.position_embeddings, module.position_table(*module.position_embeddings.shape[1:]))
        elif isinstance(module, DiscovrWeightNormLinear):
            init.trunc_normal_(module.weight_v, mean=0.0, std=std)
            init.ones_(module.weight_g)
        elif isinstance(module, DiscovrForPreTraining):
            init.trunc_normal_(module.mask_token, mean=0.0, std=std)
            init.trunc_normal_(module.prototypes, mean=0.0, std=std)
            init.zeros_(module.video_center)
            init.zeros_(module.image_center)


class DiscovrModel(DiscovrPreTrainedModel):
    """The DISCOVR video encoder: tubelet embedding, CLS token, fixed sin-cos positions, ViT blocks, final LayerNorm."""

    def __init__(self, config: DiscovrConfig):
        super().__init__(config)
        self.embeddings = DiscovrEmbeddings(config, config.hidden_size, config.num_frames, config.tubelet_size)
        self.encoder = DiscovrEncoder(config, TransformerDims.video_encoder(config))
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> DiscovrPatchEmbeddings:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.BoolTensor | None = None,
        visible_positions: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
                Normalised clips, as produced by `DiscovrVideoProcessor`.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
                True marks a masked tubelet, dropped before the blocks. Every sample must mask the same count.
                Tokens are ordered (time, height, width).
            visible_positions (`torch.LongTensor` of shape `(batch_size, num_views, num_visible)`, *optional*):
                Instead of one mask, the visible tubelets of V masked views of every clip, encoded as one batch of
                `batch_size * num_views` sequences from one patch embedding (how pretraining encodes its student
                views). See `visible_positions()` for turning masks into positions.

        Returns:
            `BaseModelOutput` whose `last_hidden_state` is `(batch_size, 1 + num_visible, hidden_size)`, CLS first;
            with `output_hidden_states`, the blocks' input and outputs (before the final LayerNorm), and with
            `output_attentions` (eager attention), each block's attention weights.
        """
        check_forward_kwargs(type(self).__name__, kwargs)
        self.embeddings.check_pixel_values(pixel_values)
        if bool_masked_pos is not None:
            check_bool_masked_pos(
                bool_masked_pos, pixel_values.shape[0], self.embeddings.num_patches, "bool_masked_pos"
            )
        if visible_positions is not None and (
            visible_positions.dim() != 3 or visible_positions.shape[0] != pixel_values.shape[0]
        ):
            raise ValueError(
                "`visible_positions` must have shape (batch_size, num_views, num_visible) with batch_size "
                f"{pixel_values.shape[0]}, got {tuple(visible_positions.shape)}"
            )
        hidden_states = self.embeddings(pixel_values, bool_masked_pos, visible_positions)
        return BaseModelOutput(last_hidden_state=self.layernorm(self.encoder(hidden_states).last_hidden_state))


class DiscovrForVideoClassification(DiscovrPreTrainedModel):
    """DISCOVR encoder with a linear head on the CLS token (or the normed mean of patch tokens).

    With `num_labels=1` and `problem_type="regression"` it predicts LVEF in percent.
    """

    # Trainer must not pass `num_items_in_batch`: the loss here is already a mean, and Trainer then rescales it
    # correctly under gradient accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: DiscovrConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.discovr = DiscovrModel(config)
        self.fc_norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.use_mean_pooling else None
        )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def pool(self, sequence_output: torch.Tensor) -> torch.Tensor:
        """CLS token, or the `fc_norm`-ed mean of the patch tokens when `use_mean_pooling`."""
        if self.fc_norm is not None:
            return self.fc_norm(sequence_output[:, 1:].mean(dim=1))
        return sequence_output[:, 0]

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
            Regression targets (`num_labels == 1`, e.g. EF in %), class indices, or multi-hot labels.
        """
        check_forward_kwargs(type(self).__name__, kwargs)
        outputs = self.discovr(pixel_values, **kwargs)
        logits = self.classifier(self.dropout(self.pool(outputs.last_hidden_state)))

        loss = None
        if labels is not None:
            if self.num_labels == 1:
                # Regression: integer targets (EF rounded to whole percent) must reach MSE as floats.
                labels = labels.to(logits.dtype)
            # Transformers' rule: MSE, cross-entropy or BCE-with-logits by `config.problem_type`, inferred when unset.
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class DiscovrSemanticSegmenterOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
        Cross-entropy of the logits, upsampled to the labels' size, over the annotated pixels.
    logits (`torch.FloatTensor` of shape `(batch_size, num_frames, num_labels, h, w)`):
        Per-frame mask logits at patch resolution (`h = w = image_size // patch_size`); the frames of one tubelet
        share theirs.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
        The encoder blocks' input and outputs, `(batch_size, 1 + num_patches, hidden_size)` each.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True` under eager attention):
        Each encoder block's attention weights.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class DiscovrLinearSegmentationHead(nn.Module):
    """The paper's linear probe: BatchNorm over the patch-token channels, then a linear classifier per token (a 1x1
    convolution)."""

    def __init__(self, config: DiscovrConfig):
        super().__init__()
        # BatchNorm as in DINOv2's linear probe: trained on B*T'*h*w tokens, in eval a fixed affine map of the features.
        self.batch_norm = nn.BatchNorm1d(config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """`(B, T', h, w, hidden_size)` tokens -> `(B, T', num_labels, h, w)` logits."""
        normed = self.batch_norm(patch_tokens.flatten(0, -2)).view(patch_tokens.shape)
        return self.classifier(self.dropout(normed)).permute(0, 1, 4, 2, 3)


class DiscovrLightSegmentationHead(nn.Module):
    """A small convolutional decoder for comparison: two (1, 3, 3) convolutions with BatchNorm and GELU, then a 1x1
    classifier, at patch resolution."""

    def __init__(self, config: DiscovrConfig):
        super().__init__()
        width = config.segmentation_light_hidden_size
        layers: list[nn.Module] = []
        for width_in in (config.hidden_size, width):
            # Spatial kernels only: the encoder's attention already mixes the whole clip in time, and zero padding
            # along time would treat the first and last tubelets unlike the others.
            layers += [
                nn.Conv3d(width_in, width, kernel_size=(1, 3, 3), padding=(0, 1, 1), bias=False),
                nn.BatchNorm3d(width),
                nn.GELU(),
            ]
        self.layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Conv3d(width, config.num_labels, kernel_size=1)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """`(B, T', h, w, hidden_size)` tokens -> `(B, T', num_labels, h, w)` logits."""
        features = self.layers(patch_tokens.permute(0, 4, 1, 2, 3))
        return self.classifier(self.dropout(features)).transpose(1, 2)


SEGMENTATION_HEAD_CLASSES = {"linear": DiscovrLinearSegmentationHead, "light": DiscovrLightSegmentationHead}


class DiscovrForSemanticSegmentation(DiscovrPreTrainedModel):
    """DISCOVR encoder with a per-frame mask head on the patch tokens (`config.segmentation_head`).

    A tubelet's tokens serve all `tubelet_size` frames it spans: its logits are repeated along time, so every frame
    gets logits `(num_labels, h, w)` at patch resolution and the labels of each frame are compared with them.

    With `config.freeze_backbone` (the default, the paper's linear probe) the encoder's parameters get
    `requires_grad=False` and, while none of them requires grad, it runs without building a graph. A PEFT adapter
    on the encoder makes its own parameters trainable, so it trains either way; `freeze_backbone=False` fine-tunes
    everything.
    """

    # Trainer must not pass `num_items_in_batch`: it would count labels against -100, not the ignore index.
    accepts_loss_kwargs = False

    def __init__(self, config: DiscovrConfig):
        super().__init__(config)
        if config.num_labels < 2:
            raise ValueError(
                "DiscovrForSemanticSegmentation needs `num_labels` >= 2 (background is a class), "
                f"got {config.num_labels}"
            )
        self.num_labels = config.num_labels
        self.discovr = DiscovrModel(config)
        self.decode_head = SEGMENTATION_HEAD_CLASSES[config.segmentation_head](config)
        self.post_init()
        self.apply_backbone_freeze()

    def tie_weights(self, *args, **kwargs) -> None:
        # `from_pretrained` re-creates every loaded parameter with requires_grad=True, then ties weights: the one
        # hook after loading, so the backbone is frozen again here.
        super().tie_weights(*args, **kwargs)
        self.apply_backbone_freeze()

    def apply_backbone_freeze(self) -> None:
        """Under `config.freeze_backbone`, take the encoder's parameters out of training."""
        if self.config.freeze_backbone:
            self.discovr.requires_grad_(False)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DiscovrSemanticSegmenterOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, num_frames, height, width)`, *optional*):
            Class index of every pixel of every frame, at any resolution (the logits are upsampled to it);
            `config.semantic_loss_ignore_index` marks pixels, or whole frames, without annotation.
        """
        check_forward_kwargs(type(self).__name__, kwargs)
        if labels is not None and (labels.dim() != 4 or tuple(labels.shape[:2]) != tuple(pixel_values.shape[:2])):
            raise ValueError(
                "`labels` must have shape (batch_size, num_frames, height, width) = "
                f"({', '.join(map(str, pixel_values.shape[:2]))}, H, W), got {tuple(labels.shape)}"
            )
        backbone_trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.discovr.parameters())
        with torch.set_grad_enabled(backbone_trains):
            outputs = self.discovr(pixel_values, **kwargs)
        side = self.config.image_size // self.config.patch_size
        patch_tokens = outputs.last_hidden_state[:, 1:].unflatten(1, (-1, side, side))
        segmented = self.segment_patch_tokens(patch_tokens, labels)
        return DiscovrSemanticSegmenterOutput(
            loss=segmented.loss, logits=segmented.logits, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def segment_patch_tokens(
        self, patch_tokens: torch.Tensor, labels: torch.Tensor | None = None
    ) -> DiscovrSemanticSegmenterOutput:
        """The head and the loss on patch tokens `(B, T', h, w, hidden_size)`: what `forward` runs after the
        backbone, and what a frozen-feature benchmark runs on cached tokens of any encoder."""
        config = self.config
        logits = self.decode_head(patch_tokens).repeat_interleave(config.tubelet_size, dim=1)
        loss = None
        if labels is not None:
            labels = labels.long()  # masks often arrive as uint8
            annotated = (labels != config.semantic_loss_ignore_index).sum()
            # Summed over the annotated pixels and divided by their count: Transformers' mean, and 0 (not NaN, still
            # with a graph) for a batch without annotation. In float32, as the sum runs over every pixel of the clips.
            loss = self.loss_function(
                logits.flatten(0, 1).float(), labels.flatten(0, 1), ignore_index=config.semantic_loss_ignore_index,
                num_items_in_batch=annotated.clamp_min(1),
            )
        return DiscovrSemanticSegmenterOutput(loss=loss, logits=logits)


def visible_positions(bool_masked_pos: torch.Tensor, num_visible: int) -> torch.Tensor:
    """Indices of the unmasked tokens along the last axis, in positional order: (..., L) -> (..., num_visible).

    The caller knows `num_visible` (every mask keeps the same count), so unlike boolean indexing this never
    waits for the device.
    """
    return bool_masked_pos.to(torch.int32).argsort(dim=-1, stable=True)[..., :num_visible]


def gather_views(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Tokens of V views of every sample: (M, L, D) tokens and (M, V, L_vis) positions -> (M * V, L_vis, D)."""
    num_samples, num_views, num_kept = positions.shape
    index = positions.reshape(num_samples, num_views * num_kept, 1).expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, index).reshape(num_samples * num_views, num_kept, tokens.shape[-1])


def standardize_tokens(tokens: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(x - mean) / (std + eps) over the token axis (dim -2), unbiased std: the SCD target normalisation."""
    mean = tokens.mean(dim=-2, keepdim=True)
    std = tokens.std(dim=-2, keepdim=True)
    return (tokens - mean) / (std + eps)


class DiscovrImageEncoder(nn.Module):
    """The single-frame ViT of the image branch: 16x16 patches (a Conv3d with temporal kernel 1), CLS, fixed
    sin-cos positions, pre-norm blocks and a final LayerNorm, sized by the `image_*` config fields."""

    def __init__(self, config: DiscovrConfig):
        super().__init__()
        self.embeddings = DiscovrEmbeddings(config, config.image_hidden_size, num_frames=1, tubelet_size=1)
        self.encoder = DiscovrEncoder(config, TransformerDims.image_encoder(config))
        self.layernorm = nn.LayerNorm(config.image_hidden_size, eps=config.image_layer_norm_eps)

    def forward(self, frames: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """`frames` `(M, C, H, W)`; `positions` `(M, V, n_vis)` visible patches of V views of each frame.

        Returns `(M * V, 1 + n_vis, image_hidden_size)`, or `(M, 1 + n, image_hidden_size)` without `positions`.
        """
        hidden_states = self.embeddings(frames.unsqueeze(1), visible_positions=positions)
        return self.layernorm(self.encoder(hidden_states).last_hidden_state)


class DiscovrWeightNormLinear(nn.Module):
    """Bias-free Linear whose weight is `weight_g * weight_v / ||weight_v||` (norm per output row).

    As in DINO, the gain `weight_g` is fixed (1 at initialisation, never trained): it is a buffer, so it stays
    out of the optimiser and the teacher EMA, and a converted checkpoint keeps the gain it stored.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.register_buffer("weight_g", torch.ones(out_features, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * nn.functional.normalize(self.weight_v, dim=1)
        return nn.functional.linear(hidden_states, weight.to(hidden_states.dtype))


class DiscovrGlobalBatchNorm(nn.BatchNorm1d):
    """`BatchNorm1d` whose training statistics span the global batch of every process.

    Under `torch.distributed` the per-feature sums are all-reduced with autograd, as `SyncBatchNorm` does (which
    runs on GPUs only), so N processes compute what one process computes on their concatenated batches. Alone, or
    in eval mode, it is `BatchNorm1d`.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed_world()):
            return super().forward(hidden_states)
        from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

        # float64 sums: E[x^2] - E[x]^2 cancels badly in float32 when the mean is large against the spread.
        values = hidden_states.double()
        count = torch.full((1,), float(values.shape[0]), dtype=values.dtype, device=values.device)
        totals = differentiable_all_reduce(torch.cat((values.sum(0), values.pow(2).sum(0), count)))
        width = values.shape[1]
        count = totals[-1]
        mean = totals[:width] / count
        variance = (totals[width : 2 * width] / count - mean.pow(2)).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = variance * count / (count - 1).clamp_min(1)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        normalized = ((values - mean) * torch.rsqrt(variance + self.eps)).to(hidden_states.dtype)
        return normalized * self.weight + self.bias


class DiscovrDinoHead(nn.Module):
    """DINO projection head: 3-layer GELU MLP to a bottleneck, L2 normalisation, weight-normalised output layer.

    With `config.dino_head_batch_norm`, a BatchNorm over the global batch follows each hidden Linear (DINO's
    `use_bn_in_head`): it standardises over the batch, so clips whose features differ only slightly still get
    distinct outputs.
    """

    def __init__(self, config: DiscovrConfig, in_features: int):
        super().__init__()
        hidden = config.dino_hidden_size
        layers: list[nn.Module] = []
        for width_in in (in_features, hidden):
            layers.append(nn.Linear(width_in, hidden))
            if config.dino_head_batch_norm:
                layers.append(DiscovrGlobalBatchNorm(hidden))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden, config.dino_bottleneck_size))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = DiscovrWeightNormLinear(config.dino_bottleneck_size, config.dino_out_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d takes (N, C): views or frames of several samples are flattened into the batch.
        bottleneck = self.mlp(hidden_states.flatten(0, -2)).view(*hidden_states.shape[:-1], -1)
        return self.last_layer(nn.functional.normalize(bottleneck, dim=-1))


class DiscovrDecoder(nn.Module):
    """Light decoder of the masked-video branch: sin-cos positions of decoder width on all N tokens, pre-norm
    blocks, a LayerNorm and a head back to the encoder width."""

    def __init__(self, config: DiscovrConfig):
        super().__init__()
        dims = TransformerDims.decoder(config)
        self.layer = nn.ModuleList([DiscovrLayer(config, dims) for _ in range(dims.num_layers)])
        self.norm = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)
        self.head = nn.Linear(dims.hidden_size, config.hidden_size)
        # Not persistent: fixed, recomputed in `_init_weights`; the reference does not store it either.
        self.register_buffer(
            "position_embeddings", self.position_table(config.num_patches, dims.hidden_size), persistent=False
        )

    @staticmethod
    def position_table(num_patches: int, hidden_size: int) -> torch.Tensor:
        """`(1, num_patches, hidden_size)` sin-cos table of positions 1..N, unlike the encoders' 0..N-1.

        The published decoder builds a table of 1 + N rows and drops row 0, as if for a CLS token; the fixture
        confirms it, and the decoder has learned those positions, so we keep them.
        """
        return sinusoid_position_table(num_patches + 1, hidden_size)[1:].unsqueeze(0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, N, decoder_hidden_size)` tokens in positional order, without positions -> `(B, N, hidden_size)`."""
        hidden_states = hidden_states + self.position_embeddings.to(hidden_states.dtype)
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states)
        return self.head(self.norm(hidden_states))


@dataclass
class DiscovrForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        The weighted sum `scd_loss_weight * scd_loss + video_dino_loss_weight * video_dino_loss +
        image_dino_loss_weight * image_dino_loss`.
    scd_loss (`torch.FloatTensor` of shape `()`):
        Cross-entropy of the decoder's prototype logits against the image teacher's Sinkhorn codes, over all tokens.
    scd_swapped_loss (`torch.FloatTensor` of shape `()`, *optional*):
        The swapped direction (image-teacher logits against the decoder's own Sinkhorn codes); reported, not trained.
        None with `return_scd_swapped_loss=False`.
    video_dino_loss (`torch.FloatTensor` of shape `()`):
        DINO cross-entropy of the V local-view video students against the video teacher on the full clip.
    image_dino_loss (`torch.FloatTensor` of shape `()`):
        DINO cross-entropy of the masked image-student views against the image teacher, over every frame.
    koleo_loss (`torch.FloatTensor` of shape `()`, *optional*):
        The KoLeo regulariser of the student CLS features, when `config.koleo_loss_weight > 0` (added to `loss`
        with that weight).
    scd_logits (`torch.FloatTensor` of shape `(batch_size, num_patches, num_prototypes)`):
        Decoder prototype scores / `scd_temperature`, tokens in positional (time, height, width) order.
    scd_codes (`torch.LongTensor` of shape `(batch_size, num_patches)`):
        The SCD targets: argmax of the balanced Sinkhorn assignment of the image-teacher features.
    teacher_assignments (`torch.LongTensor` of shape `(batch_size, num_patches)`):
        The nearest prototype of each image-teacher token, before balancing: which anatomy each prototype captured.
    video_teacher_mean (`torch.FloatTensor` of shape `(dino_out_dim,)`):
        Batch mean of the video-teacher head outputs, for `update_centers`.
    image_teacher_mean (`torch.FloatTensor` of shape `(dino_out_dim,)`):
        Batch mean of the image-teacher head outputs (over frames), for `update_centers`.
    video_teacher_probs (`torch.FloatTensor` of shape `(batch_size, dino_out_dim)`):
        The video DINO targets: the teacher's centred, sharpened distributions (training health reads them).
    image_teacher_probs (`torch.FloatTensor` of shape `(batch_size * num_frames, dino_out_dim)`):
        The image DINO targets, one per frame.
    video_student_cls (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The video student's CLS feature of the global (SCD) view.
    video_teacher_cls (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The video teacher's CLS feature of the whole clip.
    """

    loss: torch.FloatTensor | None = None
    scd_loss: torch.FloatTensor | None = None
    scd_swapped_loss: torch.FloatTensor | None = None
    video_dino_loss: torch.FloatTensor | None = None
    image_dino_loss: torch.FloatTensor | None = None
    koleo_loss: torch.FloatTensor | None = None
    scd_logits: torch.FloatTensor | None = None
    scd_codes: torch.LongTensor | None = None
    teacher_assignments: torch.LongTensor | None = None
    video_teacher_mean: torch.FloatTensor | None = None
    image_teacher_mean: torch.FloatTensor | None = None
    video_teacher_probs: torch.FloatTensor | None = None
    image_teacher_probs: torch.FloatTensor | None = None
    video_student_cls: torch.FloatTensor | None = None
    video_teacher_cls: torch.FloatTensor | None = None


class DiscovrForPreTraining(DiscovrPreTrainedModel):
    """DISCOVR pretraining: the masked-video branch with semantic cluster distillation (SCD) from an online
    DINO image branch, plus video DINO. See `docs/pretraining.md`.

    Teachers (`video_teacher`, `image_teacher` and their heads) never receive gradients: their parameters have
    `requires_grad=False`, so `[p for p in model.parameters() if p.requires_grad]` is exactly what the
    optimiser should see. The training loop, once per optimiser step and after it, calls `update_teachers`
    and `update_centers` (and `normalize_prototypes` before the next forward).
    """

    def __init__(self, config: DiscovrConfig):
        super().__init__(config)
        self.discovr = DiscovrModel(config)
        self.video_teacher = DiscovrModel(config)
        self.image_student = DiscovrImageEncoder(config)
        self.image_teacher = DiscovrImageEncoder(config)
        self.video_student_head = DiscovrDinoHead(config, config.hidden_size)
        self.video_teacher_head = DiscovrDinoHead(config, config.hidden_size)
        self.image_student_head = DiscovrDinoHead(config, config.image_hidden_size)
        self.image_teacher_head = DiscovrDinoHead(config, config.image_hidden_size)
        self.encoder_to_decoder = nn.Linear(config.hidden_size, config.decoder_hidden_size, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder = DiscovrDecoder(config)
        self.prototypes = nn.Parameter(torch.empty(config.num_prototypes, config.hidden_size))
        self.register_buffer("video_center", torch.zeros(1, config.dino_out_dim))
        self.register_buffer("image_center", torch.zeros(1, config.dino_out_dim))
        self.mask_generator = DiscovrMaskGenerator.from_config(config)
        self.post_init()
        self.freeze_teachers()
        # DINO starts every teacher as a copy of its student.
        self.update_teachers(0.0)

    def tie_weights(self, *args, **kwargs) -> None:
        # `from_pretrained` re-creates every loaded parameter with requires_grad=True, then ties weights: the one
        # hook after loading, so the teachers are frozen again here.
        super().tie_weights(*args, **kwargs)
        self.freeze_teachers()

    def freeze_teachers(self) -> None:
        """Teachers learn only through `update_teachers`: no gradients, no place in the optimiser."""
        for teacher, _ in self.teacher_student_pairs():
            teacher.requires_grad_(False)

    def teacher_student_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(teacher, student) module pairs tied by the EMA."""
        return [
            (self.video_teacher, self.discovr),
            (self.video_teacher_head, self.video_student_head),
            (self.image_teacher, self.image_student),
            (self.image_teacher_head, self.image_student_head),
        ]

    @torch.no_grad()
    def update_teachers(self, momentum: float) -> None:
        """EMA of both encoders and both teacher heads: teacher <- momentum * teacher + (1 - momentum) * student.

        Call once per optimiser step, after it (the momentum schedule belongs to the training loop).
        The fixed weight-norm gains are buffers and stay as they are.
        """
        teacher_params, student_params = [], []
        for teacher, student in self.teacher_student_pairs():
            teacher_params.extend(teacher.parameters())
            student_params.extend(student.parameters())
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)

    @torch.no_grad()
    def update_centers(
        self, video_teacher_mean: torch.Tensor, image_teacher_mean: torch.Tensor, momentum: float | None = None
    ) -> None:
        """c <- m * c + (1 - m) * global-batch mean of the teacher outputs, for both DINO centres.

        Pass the `video_teacher_mean`/`image_teacher_mean` of the step's outputs (averaged first over
        gradient-accumulation micro-batches, if any). Under `torch.distributed` the means are averaged over
        processes. `momentum` defaults to `config.dino_center_momentum`.
        """
        momentum = self.config.dino_center_momentum if momentum is None else momentum
        update_center(self.video_center, video_teacher_mean, momentum)
        update_center(self.image_center, image_teacher_mean, momentum)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Re-normalise the prototypes to unit length in place (forward also uses them normalised)."""
        self.prototypes.copy_(nn.functional.normalize(self.prototypes, dim=-1))

    def scd_targets(self, teacher_patches: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Image-teacher patch tokens `(B * T, n, D)` -> SCD target features `(B, N, D)` in positional order.

        Each tubelet takes the first of its frames, standardised over its n tokens, so target (t, h, w) sits at
        the same (tubelet, patch) position as decoder token (t, h, w).
        """
        frames = teacher_patches.view(batch_size, self.config.num_frames, *teacher_patches.shape[1:])
        first_frames = standardize_tokens(frames[:, :: self.config.tubelet_size])
        return first_frames.flatten(1, 2)

    def decode(self, visible_tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Decoder predictions `(B, N, hidden_size)` in positional order from the encoder's visible patch tokens
        `(B, N_vis, hidden_size)` at `positions` `(B, N_vis)`; every other position gets `mask_token`."""
        projected = self.encoder_to_decoder(visible_tokens)
        batch_size, _, width = projected.shape
        hidden_states = self.mask_token.to(projected.dtype).expand(batch_size, self.config.num_patches, width)
        hidden_states = hidden_states.scatter(1, positions.unsqueeze(-1).expand(-1, -1, width), projected)
        return self.decoder(hidden_states)

    def dino_teacher_targets(self, logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
        """A DINO teacher's targets under `config.dino_centering`: the running `center`, or Sinkhorn-Knopp."""
        if self.config.dino_centering == "sinkhorn_knopp":
            return dino_teacher_targets(logits, temperature, sinkhorn_iterations=self.config.dino_sinkhorn_iterations)
        return dino_teacher_targets(logits, temperature, center=center)

    def prototype_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every feature `(..., D)` with every prototype: `(..., K)`."""
        prototypes = nn.functional.normalize(self.prototypes, dim=-1)
        return nn.functional.normalize(features, dim=-1) @ prototypes.t().to(features.dtype)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        masks: DiscovrMasks | None = None,
        teacher_temperature: float | None = None,
        generator: torch.Generator | None = None,
        return_scd_swapped_loss: bool = True,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DiscovrForPreTrainingOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
                Normalised clips.
            masks (`DiscovrMasks`, *optional*):
                The masks of the global view (decoder/SCD), the video-DINO local views and the image-DINO views
                of every frame. `DiscovrMaskGenerator` draws them; when None, the model draws them itself with
                `generator`.
            teacher_temperature (`float`, *optional*):
                DINO teacher temperature of this step (its schedule belongs to training); defaults to
                `config.dino_teacher_temperature`.
            generator (`torch.Generator`, *optional*):
                CPU generator for the masks drawn when `masks` is None.
            return_scd_swapped_loss (`bool`, *optional*, defaults to `True`):
                Also compute the reported, untrained swapped SCD direction (a second Sinkhorn); training loops
                ask for it on logging steps only. `False` leaves `scd_swapped_loss` None and changes nothing else.

        The centres are not touched here: call `update_centers` with the returned teacher means after the step.
        """
        check_forward_kwargs(
            type(self).__name__, kwargs,
            hint="it takes its masks as `masks` (a `DiscovrMaskGenerator` draw), not VideoMAE's `bool_masked_pos`"
            if "bool_masked_pos" in kwargs else "",
        )
        config = self.config
        teacher_temperature = config.dino_teacher_temperature if teacher_temperature is None else teacher_temperature
        self.discovr.embeddings.check_pixel_values(pixel_values)
        batch_size = pixel_values.shape[0]
        if masks is None:
            masks = self.mask_generator(batch_size, generator)
        elif not isinstance(masks, DiscovrMasks):
            raise TypeError(
                f"`masks` must be `DiscovrMasks` (drawn by `DiscovrMaskGenerator`, or built as `DiscovrMasks("
                f"global_view=..., local_views=..., image_views=...)`), got {type(masks).__name__}"
            )
        masks.check_fits(config, batch_size)
        masks = masks.to(pixel_values.device, non_blocking=True)

        # Video student: the global view and the V local views share one encoder batch.
        video_masks = masks.video_views
        video_positions = visible_positions(video_masks, masks.num_visible)
        student = self.discovr(pixel_values, visible_positions=video_positions).last_hidden_state
        student = student.view(batch_size, video_masks.shape[1], *student.shape[1:])
        predictions = self.decode(student[:, 0, 1:], video_positions[:, 0])
        video_student_logits = self.video_student_head(student[:, 1:, 0])

        # Image student: every masked view of every frame in one batch.
        frames = pixel_values.flatten(0, 1)
        image_positions = visible_positions(masks.image_views, masks.num_image_visible).flatten(0, 1)
        image_student = self.image_student(frames, image_positions)
        image_student_logits = self.image_student_head(image_student[:, 0])
        image_student_logits = image_student_logits.view(frames.shape[0], -1, config.dino_out_dim)

        # Teachers see everything, once; the image teacher's patch tokens also give the SCD targets.
        with torch.no_grad():
            video_teacher_cls = self.video_teacher(pixel_values, return_dict=True).last_hidden_state[:, 0]
            video_teacher_logits = self.video_teacher_head(video_teacher_cls)
            image_teacher = self.image_teacher(frames)
            image_teacher_logits = self.image_teacher_head(image_teacher[:, 0])
            teacher_scores = self.prototype_scores(self.scd_targets(image_teacher[:, 1:], batch_size)).float()
            sinkhorn_args = (config.sinkhorn_epsilon, config.sinkhorn_iterations)
            scd_codes = sinkhorn(teacher_scores.flatten(0, 1), *sinkhorn_args).argmax(dim=-1).view(batch_size, -1)

        scd_logits = self.prototype_scores(predictions).float() / config.scd_temperature
        scd_loss = nn.functional.cross_entropy(scd_logits.flatten(0, 1), scd_codes.flatten())
        scd_swapped_loss = None
        if return_scd_swapped_loss:
            with torch.no_grad():
                video_codes = sinkhorn(scd_logits.flatten(0, 1) * config.scd_temperature, *sinkhorn_args).argmax(-1)
                scd_swapped_loss = nn.functional.cross_entropy(
                    teacher_scores.flatten(0, 1) / config.scd_temperature, video_codes
                )

        video_teacher_probs = self.dino_teacher_targets(video_teacher_logits, self.video_center, teacher_temperature)
        image_teacher_probs = self.dino_teacher_targets(image_teacher_logits, self.image_center, teacher_temperature)
        student_temperature = config.dino_student_temperature
        video_dino_loss = dino_cross_entropy(video_student_logits, video_teacher_probs, student_temperature)
        image_dino_loss = dino_cross_entropy(image_student_logits, image_teacher_probs, student_temperature)
        loss = (
            config.scd_loss_weight * scd_loss
            + config.video_dino_loss_weight * video_dino_loss
            + config.image_dino_loss_weight * image_dino_loss
        )
        koleo = None
        if config.koleo_loss_weight > 0:
            # Per student view, over the batch: the clips' local views, and the frames' image views.
            koleo = koleo_loss(student[:, 1:, 0].transpose(0, 1)) + koleo_loss(
                image_student[:, 0].view(frames.shape[0], -1, image_student.shape[-1]).transpose(0, 1)
            )
            loss = loss + config.koleo_loss_weight * koleo

        return DiscovrForPreTrainingOutput(
            loss=loss,
            scd_loss=scd_loss,
            scd_swapped_loss=scd_swapped_loss,
            video_dino_loss=video_dino_loss,
            image_dino_loss=image_dino_loss,
            koleo_loss=koleo,
            scd_logits=scd_logits,
            scd_codes=scd_codes,
            teacher_assignments=teacher_scores.argmax(dim=-1),
            video_teacher_mean=video_teacher_logits.float().mean(dim=0),
            image_teacher_mean=image_teacher_logits.float().mean(dim=0),
            video_teacher_probs=video_teacher_probs,
            image_teacher_probs=image_teacher_probs,
            video_student_cls=student[:, 0, 0],
            video_teacher_cls=video_teacher_cls,
        )


__all__ = [
    "DiscovrPreTrainedModel",
    "DiscovrModel",
    "DiscovrForPreTraining",
    "DiscovrForPreTrainingOutput",
    "DiscovrForVideoClassification",
    "DiscovrForSemanticSegmentation",
    "DiscovrSemanticSegmenterOutput",
]
