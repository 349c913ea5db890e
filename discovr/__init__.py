"""DISCOVR for Transformers: self-supervised echocardiography video models.

Importing the package registers the DISCOVR classes with the Transformers Auto classes and the
video-classification pipeline, so `AutoModel.from_pretrained(local_dir)` and
`pipeline("video-classification", model=local_dir)` work.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
)

from .configuration_discovr import DiscovrConfig
from .masking_discovr import DiscovrMaskGenerator, DiscovrMasks
from .modeling_discovr import (
    DiscovrForPreTraining,
    DiscovrForSemanticSegmentation,
    DiscovrForVideoClassification,
    DiscovrModel,
    DiscovrPreTrainedModel,
)
from .inference.pipeline import DiscovrVideoClassificationPipeline, register_pipeline
from .video_processing_discovr import DiscovrVideoProcessor

__version__ = "0.1.0"

AutoConfig.register(DiscovrConfig.model_type, DiscovrConfig)
AutoModel.register(DiscovrConfig, DiscovrModel)
AutoModelForPreTraining.register(DiscovrConfig, DiscovrForPreTraining)
AutoModelForVideoClassification.register(DiscovrConfig, DiscovrForVideoClassification)
AutoModelForSemanticSegmentation.register(DiscovrConfig, DiscovrForSemanticSegmentation)
AutoVideoProcessor.register(DiscovrConfig, DiscovrVideoProcessor)

# `auto_map` entries in saved configs let `trust_remote_code=True` load a model without this package.
DiscovrConfig.register_for_auto_class()
DiscovrModel.register_for_auto_class("AutoModel")
DiscovrForPreTraining.register_for_auto_class("AutoModelForPreTraining")
DiscovrForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
DiscovrForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
DiscovrVideoProcessor.register_for_auto_class("AutoVideoProcessor")

# DISCOVR models get the processor's strided clips and clip averaging; other video models keep the stock pipeline.
register_pipeline()

__all__ = [
    "DiscovrConfig",
    "DiscovrPreTrainedModel",
    "DiscovrModel",
    "DiscovrForPreTraining",
    "DiscovrForVideoClassification",
    "DiscovrForSemanticSegmentation",
    "DiscovrMaskGenerator",
    "DiscovrMasks",
    "DiscovrVideoProcessor",
    "DiscovrVideoClassificationPipeline",
]
