"""Applications of a trained DISCOVR model (not part of what a `trust_remote_code` user downloads).

- `prediction`: multi-clip prediction (`predict_video`, `predict_videos`) and the one rule that averages clips;
- `pipeline`: the `video-classification` pipeline for DISCOVR models;
- `predict`: `discovr-predict`, a prediction table for videos, folders and manifests;
- `cluster_maps`: `discovr-cluster-maps`, what the image teacher and the video decoder assign to every token.
"""
