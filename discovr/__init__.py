"""DISCOVR for Transformers: self-supervised echocardiography video models.

Importing the package registers the DISCOVR classes with the Transformers Auto classes, so
`AutoModel.from_pretrained(local_dir)` and `pipeline("video-classification", model=local_dir)` work.
"""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from .configuration_discovr import DiscovrConfig
from .modeling_discovr import DiscovrForVideoClassification, DiscovrModel, DiscovrPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register(DiscovrConfig.model_type, DiscovrConfig)
AutoModel.register(DiscovrConfig, DiscovrModel)
AutoModelForVideoClassification.register(DiscovrConfig, DiscovrForVideoClassification)

# `auto_map` entries in saved configs let `trust_remote_code=True` load a model without this package.
DiscovrConfig.register_for_auto_class()
DiscovrModel.register_for_auto_class("AutoModel")
DiscovrForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")

__all__ = [
    "DiscovrConfig",
    "DiscovrPreTrainedModel",
    "DiscovrModel",
    "DiscovrForVideoClassification",
]
