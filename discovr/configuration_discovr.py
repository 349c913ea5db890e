"""DISCOVR model configuration."""

from __future__ import annotations

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN


# The classification head's losses (Transformers' `ForVideoClassification` loss); None infers one from the labels.
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
# The heads of `DiscovrForSemanticSegmentation`.
SEGMENTATION_HEADS = ("linear", "light")


class DiscovrConfig(PreTrainedConfig):
    r"""
    Configuration of a DISCOVR model: the video encoder, its classification and segmentation heads, and every
    pretraining component (decoder, prototypes, image branch, DINO heads, losses, masking).

    Defaults reproduce the published ViT-B setting: 64 frames of 112x112 pixels, tubelets of
    2x16x16, width 768, 12 layers and heads.

    Args:
        image_size (`int`, defaults to 112): frame height and width.
        patch_size (`int`, defaults to 16): spatial patch size.
        num_channels (`int`, defaults to 3): input channels (grayscale echo is replicated to 3).
        num_frames (`int`, defaults to 64): frames per clip.
        tubelet_size (`int`, defaults to 2): frames per patch along time.
        hidden_size (`int`, defaults to 768): video encoder width.
        num_hidden_layers (`int`, defaults to 12): video encoder depth.
        num_attention_heads (`int`, defaults to 12): video encoder heads.
        intermediate_size (`int`, defaults to 3072): video encoder MLP width.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and MLP.
        attention_probs_dropout_prob (`float`, defaults to 0.0): attention-probability dropout.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal initialiser.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon of the video encoder and decoder.
        qkv_bias (`bool`, defaults to `True`): learnable query and value biases (the key bias is zero).
        use_mean_pooling (`bool`, defaults to `False`): classify from the mean of the patch tokens
            (with `fc_norm`) instead of the CLS token.
        classifier_dropout (`float`, defaults to 0.0): dropout before the classifier (of every head, segmentation
            too).
        decoder_hidden_size (`int`, defaults to 384): decoder width.
        decoder_num_hidden_layers (`int`, defaults to 4): decoder depth.
        decoder_num_attention_heads (`int`, defaults to 6): decoder heads.
        decoder_intermediate_size (`int`, defaults to 1536): decoder MLP width.
        num_prototypes (`int`, defaults to 3000): K, the number of SCD prototypes.
        sinkhorn_epsilon (`float`, defaults to 0.05): Sinkhorn entropic regularisation.
        sinkhorn_iterations (`int`, defaults to 10): Sinkhorn row/column normalisation rounds.
        scd_temperature (`float`, defaults to 0.1): temperature of the SCD prototype logits.
        image_hidden_size (`int`, *optional*): image-branch ViT width; `None` follows `hidden_size`, which it must
            equal (the SCD prototypes score both branches' features).
        image_num_hidden_layers (`int`, *optional*): image-branch depth; `None` follows `num_hidden_layers`.
        image_num_attention_heads (`int`, *optional*): image-branch heads; `None` follows `num_attention_heads`.
        image_intermediate_size (`int`, *optional*): image-branch MLP width; `None` follows `intermediate_size`.
        image_qkv_bias (`bool`, defaults to `False`): query/value biases in the image branch.
        image_layer_norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon of the image branch.
        image_hidden_act (`str`, defaults to `"gelu"`): MLP activation of the image branch.
        image_hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and MLP in the image branch.
        image_attention_probs_dropout_prob (`float`, defaults to 0.0): attention-probability dropout in the image
            branch.
        dino_hidden_size (`int`, defaults to 2048): DINO head MLP width.
        dino_bottleneck_size (`int`, defaults to 256): DINO head bottleneck width.
        dino_out_dim (`int`, defaults to 16384): DINO head output width.
        dino_head_batch_norm (`bool`, defaults to `False`): BatchNorm after each hidden layer of the DINO heads
            (DINO's `use_bn_in_head`); the published model has none.
        dino_student_temperature (`float`, defaults to 0.1): student softmax temperature.
        dino_teacher_temperature (`float`, defaults to 0.07): teacher temperature used when the
            training loop does not pass one (the schedule's final value).
        dino_center_momentum (`float`, defaults to 0.9): momentum of the teacher centres.
        dino_centering (`str`, defaults to `"center"`): how the DINO teachers' outputs are centred: `"center"`
            subtracts the running centre (DINO, the published method); `"sinkhorn_knopp"` balances them over the
            batch with Sinkhorn-Knopp at the teacher temperature (DINOv2), and the centres go unused.
        dino_sinkhorn_iterations (`int`, defaults to 3): Sinkhorn-Knopp rounds of `"sinkhorn_knopp"` centring.
        mask_ratio (`float`, defaults to 0.9): share of patches masked per frame in every video tube mask.
        num_local_views (`int`, defaults to 4): V, masked student views per clip and per frame.
        image_mask_ratio (`float`, defaults to 0.9): share of patches masked in each image-student view.
        scd_loss_weight (`float`, defaults to 1.0): weight of the SCD loss.
        video_dino_loss_weight (`float`, defaults to 1.0): weight of the video DINO loss.
        image_dino_loss_weight (`float`, defaults to 0.25): weight of the image DINO loss (the
            published code's effective 256/1024 factor).
        koleo_loss_weight (`float`, defaults to 0.0): weight of DINOv2's KoLeo regulariser on the student CLS
            tokens (video local views and image views), which spreads them apart; 0 (the published method) turns
            it off.
        semantic_loss_ignore_index (`int`, defaults to 255): segmentation label of pixels (and whole frames)
            without annotation, left out of the loss (Transformers' name, as in Segformer and BEiT).
        segmentation_head (`str`, defaults to `"linear"`): head of `DiscovrForSemanticSegmentation`: `"linear"`
            (the paper's probe: BatchNorm and a per-patch linear classifier) or `"light"` (two spatial 3x3
            convolutions with BatchNorm and GELU, then the classifier), both at patch resolution.
        segmentation_light_hidden_size (`int`, defaults to 256): width of the `"light"` head's convolutions.
        freeze_backbone (`bool`, defaults to `True`): `DiscovrForSemanticSegmentation` trains its head only: the
            encoder's parameters get `requires_grad=False` and it runs without a graph. `False` fine-tunes all
            (or a PEFT adapter). Other models ignore it.
    """

    model_type = "discovr"

    def __init__(
        self,
        image_size: int = 112,
        patch_size: int = 16,
        num_channels: int = 3,
        num_frames: int = 64,
        tubelet_size: int = 2,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        use_mean_pooling: bool = False,
        classifier_dropout: float = 0.0,
        decoder_hidden_size: int = 384,
        decoder_num_hidden_layers: int = 4,
        decoder_num_attention_heads: int = 6,
        decoder_intermediate_size: int = 1536,
        num_prototypes: int = 3000,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 10,
        scd_temperature: float = 0.1,
        image_hidden_size: int | None = None,
        image_num_hidden_layers: int | None = None,
        image_num_attention_heads: int | None = None,
        image_intermediate_size: int | None = None,
        image_qkv_bias: bool = False,
        image_layer_norm_eps: float = 1e-5,
        image_hidden_act: str = "gelu",
        image_hidden_dropout_prob: float = 0.0,
        image_attention_probs_dropout_prob: float = 0.0,
        dino_hidden_size: int = 2048,
        dino_bottleneck_size: int = 256,
        dino_out_dim: int = 16384,
        dino_head_batch_norm: bool = False,
        dino_student_temperature: float = 0.1,
        dino_teacher_temperature: float = 0.07,
        dino_center_momentum: float = 0.9,
        dino_centering: str = "center",
        dino_sinkhorn_iterations: int = 3,
        mask_ratio: float = 0.9,
        num_local_views: int = 4,
        image_mask_ratio: float = 0.9,
        scd_loss_weight: float = 1.0,
        video_dino_loss_weight: float = 1.0,
        image_dino_loss_weight: float = 0.25,
        koleo_loss_weight: float = 0.0,
        semantic_loss_ignore_index: int = 255,
        segmentation_head: str = "linear",
        segmentation_light_hidden_size: int = 256,
        freeze_backbone: bool = True,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.use_mean_pooling = use_mean_pooling
        self.classifier_dropout = classifier_dropout
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.num_prototypes = num_prototypes
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.scd_temperature = scd_temperature
        # The image branch is the video encoder's 2D twin unless sized otherwise; the resolved sizes are saved,
        # so a saved config never changes meaning.
        self.image_hidden_size = hidden_size if image_hidden_size is None else image_hidden_size
        self.image_num_hidden_layers = num_hidden_layers if image_num_hidden_layers is None else image_num_hidden_layers
        self.image_num_attention_heads = (
            num_attention_heads if image_num_attention_heads is None else image_num_attention_heads
        )
        self.image_intermediate_size = intermediate_size if image_intermediate_size is None else image_intermediate_size
        self.image_qkv_bias = image_qkv_bias
        self.image_layer_norm_eps = image_layer_norm_eps
        self.image_hidden_act = image_hidden_act
        self.image_hidden_dropout_prob = image_hidden_dropout_prob
        self.image_attention_probs_dropout_prob = image_attention_probs_dropout_prob
        self.dino_hidden_size = dino_hidden_size
        self.dino_bottleneck_size = dino_bottleneck_size
        self.dino_out_dim = dino_out_dim
        self.dino_head_batch_norm = dino_head_batch_norm
        self.dino_student_temperature = dino_student_temperature
        self.dino_teacher_temperature = dino_teacher_temperature
        self.dino_center_momentum = dino_center_momentum
        self.dino_centering = dino_centering
        self.dino_sinkhorn_iterations = dino_sinkhorn_iterations
        self.mask_ratio = mask_ratio
        self.num_local_views = num_local_views
        self.image_mask_ratio = image_mask_ratio
        self.scd_loss_weight = scd_loss_weight
        self.video_dino_loss_weight = video_dino_loss_weight
        self.image_dino_loss_weight = image_dino_loss_weight
        self.koleo_loss_weight = koleo_loss_weight
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.segmentation_head = segmentation_head
        self.segmentation_light_hidden_size = segmentation_light_hidden_size
        self.freeze_backbone = freeze_backbone
        super().__init__(**kwargs)
        self.validate()

    @property
    def num_patches_per_frame(self) -> int:
        """Patches in one tubelet slot: (image_size / patch_size) ** 2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_patches(self) -> int:
        """N, video tokens per clip (without CLS)."""
        return (self.num_frames // self.tubelet_size) * self.num_patches_per_frame

    def validate(self) -> None:
        """Raise `ValueError`, naming the field, for any inconsistent setting."""
        problems = []
        positive = (
            "image_size", "patch_size", "num_channels", "num_frames", "tubelet_size", "hidden_size",
            "num_hidden_layers", "num_attention_heads", "intermediate_size", "decoder_hidden_size",
            "decoder_num_attention_heads", "decoder_intermediate_size", "num_prototypes",
            "sinkhorn_iterations", "image_hidden_size", "image_num_hidden_layers",
            "image_num_attention_heads", "image_intermediate_size", "dino_hidden_size",
            "dino_bottleneck_size", "dino_out_dim", "num_local_views", "dino_sinkhorn_iterations",
            "segmentation_light_hidden_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"`{name}` must be a positive integer, got {value!r}")
        if problems:
            raise ValueError("Invalid DiscovrConfig: " + "; ".join(problems))
        if self.decoder_num_hidden_layers < 0:
            problems.append(f"`decoder_num_hidden_layers` must be >= 0, got {self.decoder_num_hidden_layers}")
        if self.image_size % self.patch_size:
            problems.append(f"`image_size` ({self.image_size}) must be divisible by `patch_size` ({self.patch_size})")
        if self.num_frames % self.tubelet_size:
            problems.append(f"`num_frames` ({self.num_frames}) must be divisible by `tubelet_size` ({self.tubelet_size})")
        for width, heads in (
            ("hidden_size", "num_attention_heads"),
            ("decoder_hidden_size", "decoder_num_attention_heads"),
            ("image_hidden_size", "image_num_attention_heads"),
        ):
            if getattr(self, width) % getattr(self, heads):
                problems.append(
                    f"`{width}` ({getattr(self, width)}) must be divisible by `{heads}` ({getattr(self, heads)})"
                )
        for name in ("mask_ratio", "image_mask_ratio"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                problems.append(f"`{name}` must lie strictly between 0 and 1, got {value}")
        for name in ("sinkhorn_epsilon", "scd_temperature", "dino_student_temperature", "dino_teacher_temperature"):
            if getattr(self, name) <= 0:
                problems.append(f"`{name}` must be positive, got {getattr(self, name)}")
        for name in ("hidden_act", "image_hidden_act"):
            if getattr(self, name) not in ACT2FN:
                problems.append(f"`{name}` must be an activation Transformers knows, got {getattr(self, name)!r}")
        if self.problem_type not in PROBLEM_TYPES:
            problems.append(f"`problem_type` must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        if self.segmentation_head not in SEGMENTATION_HEADS:
            problems.append(f"`segmentation_head` must be one of {SEGMENTATION_HEADS}, got {self.segmentation_head!r}")
        if not isinstance(self.semantic_loss_ignore_index, int) or isinstance(self.semantic_loss_ignore_index, bool):
            problems.append(f"`semantic_loss_ignore_index` must be an integer, got {self.semantic_loss_ignore_index!r}")
        if self.dino_centering not in ("center", "sinkhorn_knopp"):
            problems.append(f"`dino_centering` must be 'center' or 'sinkhorn_knopp', got {self.dino_centering!r}")
        if not 0.0 <= self.dino_center_momentum <= 1.0:
            problems.append(f"`dino_center_momentum` must lie in [0, 1], got {self.dino_center_momentum}")
        for name in (
            "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "image_hidden_dropout_prob",
            "image_attention_probs_dropout_prob",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"`{name}` must lie in [0, 1), got {getattr(self, name)}")
        for name in ("scd_loss_weight", "video_dino_loss_weight", "image_dino_loss_weight", "koleo_loss_weight"):
            if getattr(self, name) < 0:
                problems.append(f"`{name}` must be non-negative, got {getattr(self, name)}")
        if self.image_hidden_size != self.hidden_size:
            # SCD scores image-teacher patch features against prototypes of the video width.
            problems.append(
                f"`image_hidden_size` ({self.image_hidden_size}) must equal `hidden_size` ({self.hidden_size}): "
                "the SCD prototypes score both"
            )
        if problems:
            raise ValueError("Invalid DiscovrConfig: " + "; ".join(problems))


__all__ = ["DiscovrConfig"]
