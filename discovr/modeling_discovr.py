"""PyTorch DISCOVR models: the video encoder, its classification head and the pretraining objective."""

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
from transformers.utils import logging

from .configuration_discovr import DiscovrConfig

logger = logging.get_logger(__name__)


@dataclass(frozen=True)
class TransformerDims:
    """Sizes of one stack of pre-norm transformer blocks (video encoder, decoder or image branch)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    qkv_bias: bool
    layer_norm_eps: float

    @classmethod
    def video_encoder(cls, config: DiscovrConfig) -> TransformerDims:
        return cls(
            config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.qkv_bias, config.layer_norm_eps,
        )

    @classmethod
    def image_encoder(cls, config: DiscovrConfig) -> TransformerDims:
        return cls(
            config.image_hidden_size, config.image_num_hidden_layers, config.image_num_attention_heads,
            config.image_intermediate_size, config.image_qkv_bias, config.image_layer_norm_eps,
        )

    @classmethod
    def decoder(cls, config: DiscovrConfig) -> TransformerDims:
        # The decoder shares the video encoder's q/v-bias and LayerNorm settings, as in the reference.
        return cls(
            config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads,
            config.decoder_intermediate_size, config.qkv_bias, config.layer_norm_eps,
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

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.patch_embeddings(pixel_values.to(self.patch_embeddings.projection.weight.dtype))
        embeddings = embeddings + self.position_embeddings.to(embeddings.dtype)
        if bool_masked_pos is not None:
            embeddings = gather_visible(embeddings, bool_masked_pos)
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
        self.dropout_prob = config.attention_probs_dropout_prob
        self.query = nn.Linear(dims.hidden_size, dims.hidden_size, bias=dims.qkv_bias)
        self.key = nn.Linear(dims.hidden_size, dims.hidden_size, bias=False)
        self.value = nn.Linear(dims.hidden_size, dims.hidden_size, bias=dims.qkv_bias)
        self.proj = nn.Linear(dims.hidden_size, dims.hidden_size)
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        head_shape = (*hidden_states.shape[:-1], self.num_heads, self.head_dim)
        query = self.query(hidden_states).view(head_shape).transpose(1, 2)
        key = self.key(hidden_states).view(head_shape).transpose(1, 2)
        value = self.value(hidden_states).view(head_shape).transpose(1, 2)

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
            output_attentions=output_attentions,
        )
        attn_output = attn_output.reshape(*hidden_states.shape[:-1], -1)
        return self.proj_dropout(self.proj(attn_output)), attn_weights


class DiscovrMLP(nn.Module):
    """Two-layer feed-forward block."""

    def __init__(self, config: DiscovrConfig, dims: TransformerDims):
        super().__init__()
        self.fc1 = nn.Linear(dims.hidden_size, dims.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(dims.intermediate_size, dims.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class DiscovrLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, config: DiscovrConfig, dims: TransformerDims):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)
        self.attention = DiscovrSelfAttention(config, dims)
        self.norm2 = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)
        self.mlp = DiscovrMLP(config, dims)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(self.norm1(hidden_states), output_attentions=output_attentions)
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.norm2(hidden_states))
        return hidden_states, attn_weights


class DiscovrEncoder(nn.Module):
    """A stack of `DiscovrLayer`s."""

    def __init__(self, config: DiscovrConfig, dims: TransformerDims):
        super().__init__()
        self.layer = nn.ModuleList([DiscovrLayer(config, dims) for _ in range(dims.num_layers)])
        self.gradient_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            hidden_states, attn_weights = layer_module(hidden_states, output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


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

    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal Linear/Conv weights, unit LayerNorms, and every DISCOVR-specific tensor."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, DiscovrEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            init.copy_(
                module.position_embeddings,
                sinusoid_position_table(*module.position_embeddings.shape[1:]).unsqueeze(0),
            )


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

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.BoolTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
                Normalised clips, as produced by `DiscovrVideoProcessor`.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
                True marks a masked tubelet, dropped before the blocks. Every sample must mask the same count.
                Tokens are ordered (time, height, width).

        Returns:
            `BaseModelOutput` whose `last_hidden_state` is `(batch_size, 1 + num_visible, hidden_size)`, CLS first.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        self.embeddings.check_pixel_values(pixel_values)
        if bool_masked_pos is not None:
            check_bool_masked_pos(
                bool_masked_pos, pixel_values.shape[0], self.embeddings.num_patches, "bool_masked_pos"
            )
        hidden_states = self.embeddings(pixel_values, bool_masked_pos)
        encoder_outputs = self.encoder(
            hidden_states, output_attentions=output_attentions, output_hidden_states=output_hidden_states
        )
        sequence_output = self.layernorm(encoder_outputs.last_hidden_state)
        if not return_dict:
            return tuple(
                v for v in (sequence_output, encoder_outputs.hidden_states, encoder_outputs.attentions) if v is not None
            )
        return BaseModelOutput(
            last_hidden_state=sequence_output,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


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

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
            Regression targets (`num_labels == 1`, e.g. EF in %), class indices, or multi-hot labels.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.discovr(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(self.pool(outputs.last_hidden_state)))

        loss = None
        if labels is not None:
            loss = self.compute_loss(logits, labels.to(logits.device))
        if not return_dict:
            output = (logits,) + tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE, cross-entropy or BCE-with-logits, chosen by `config.problem_type` (inferred when unset)."""
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            if self.num_labels == 1:
                return nn.functional.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
            return nn.functional.mse_loss(logits, labels.to(logits.dtype))
        if self.config.problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if self.config.problem_type == "multi_label_classification":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise ValueError(
            f"Unknown `problem_type` {self.config.problem_type!r}: expected 'regression', "
            "'single_label_classification' or 'multi_label_classification'"
        )


__all__ = [
    "DiscovrPreTrainedModel",
    "DiscovrModel",
    "DiscovrForVideoClassification",
]
