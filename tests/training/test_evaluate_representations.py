"""kNN, anomaly score and linear probes on features with a known answer; the cache; `discovr-eval` end to end."""

import json
import math

import numpy as np
import pytest
import torch

from discovr import DiscovrModel
from discovr.training import features as features_module
from discovr.training.evaluate_representations import (
    EvalConfig,
    evaluate_representations,
    knn_anomaly_scores,
    knn_predict,
    linear_probe_classification,
    linear_probe_regression,
    main,
)
from discovr.training.features import cached_features, feature_cache_key
from discovr.video_processing_discovr import DiscovrVideoProcessor

from discovr_testing import FRAME_STRIDE


def test_knn_votes_by_hand():
    # Memory on the unit circle; the query at angle 0 has cosines 1, cos 60°, cos 90°, cos 180° to them.
    angles = np.radians([0.0, 60.0, 90.0, 180.0])
    memory = np.stack([np.cos(angles), np.sin(angles)], axis=1) * [[3.0], [1.0], [2.0], [0.5]]  # norms do not matter
    labels = np.array([0, 1, 1, 1])
    query = np.array([[5.0, 0.0]])
    predicted, votes = knn_predict(memory, labels, query, num_classes=2, k=3, temperature=0.5)
    # The 3 nearest are angles 0 (class 0), 60 and 90 (class 1): votes exp(1/0.5) vs exp(0.5/0.5) + exp(0/0.5).
    np.testing.assert_allclose(votes[0], [math.exp(2.0), math.exp(1.0) + 1.0], rtol=1e-6)
    assert predicted.tolist() == [0]
    # With a high temperature the two class-1 neighbours outvote the closest one.
    predicted, _ = knn_predict(memory, labels, query, num_classes=2, k=3, temperature=10.0)
    assert predicted.tolist() == [1]


def test_knn_separates_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 16) * 5
    train_labels = np.repeat(np.arange(3), 20)
    test_labels = np.repeat(np.arange(3), 10)
    train = centres[train_labels] + rng.normal(size=(60, 16))
    test = centres[test_labels] + rng.normal(size=(30, 16))
    predicted, _ = knn_predict(train, train_labels, test, num_classes=3, k=10)
    assert (predicted == test_labels).mean() == 1.0


def test_knn_rejects_bad_labels():
    with pytest.raises(ValueError, match="one label per training feature"):
        knn_predict(np.ones((3, 2)), [0, 1], np.ones((1, 2)), num_classes=2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
        knn_predict(np.ones((2, 2)), [0, 2], np.ones((1, 2)), num_classes=2)
    with pytest.raises(ValueError, match="dim 2 but queries have 3"):
        knn_predict(np.ones((2, 2)), [0, 1], np.ones((1, 3)), num_classes=2)


def test_anomaly_score_by_hand():
    normal = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = np.array([[2.0, 0.0], [0.0, -1.0]])
    scores = knn_anomaly_scores(normal, queries, k=2)
    # Query 1 matches (1, 0) exactly and (0, 1) at 90°: mean cosine 0.5. Query 2: nearest cosines 0 and 0.
    np.testing.assert_allclose(scores, [0.5, 1.0], atol=1e-6)


def test_linear_probes_on_known_signals():
    rng = np.random.default_rng(0)

    def split(n):
        x = rng.normal(size=(n, 8))
        return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int), 50 + 10 * x[:, 2] - 5 * x[:, 3] + rng.normal(0, 0.5, n)

    (train_x, train_c, train_y), (val_x, val_c, val_y), (test_x, test_c, test_y) = split(200), split(60), split(60)
    probe = linear_probe_classification((train_x, train_c), (val_x, val_c), (test_x, test_c), num_classes=2)
    assert probe["macro_f1"] > 0.9 and probe["accuracy"] > 0.9
    assert probe["C"] in (0.001, 0.01, 0.1, 1.0, 10.0)
    ridge = linear_probe_regression((train_x, train_y), (val_x, val_y), (test_x, test_y))
    assert ridge["mae"] < 1.0 < 5.0 < ridge["train_mean_baseline_mae"]
    assert ridge["r2"] > 0.98


def test_feature_cache_reuses_and_invalidates(synthetic_echonet, tiny_encoder_dir, tmp_path, monkeypatch):
    from discovr.data import load_echonet_dynamic

    encoder = DiscovrModel.from_pretrained(tiny_encoder_dir)
    processor = DiscovrVideoProcessor.from_pretrained(tiny_encoder_dir)
    videos = list(load_echonet_dynamic(synthetic_echonet)["test"]["video"])
    calls = []
    extract = features_module.extract_features
    monkeypatch.setattr(features_module, "extract_features", lambda *a, **k: calls.append(a[3]) or extract(*a, **k))

    first = cached_features(encoder, tiny_encoder_dir, processor, videos, tmp_path, "test", progress=False)
    again = cached_features(encoder, tiny_encoder_dir, processor, videos, tmp_path, "test", progress=False)
    assert set(first) == {"cls", "mean"}
    assert first["cls"].shape == first["mean"].shape == (len(videos), encoder.config.hidden_size)
    torch.testing.assert_close(first, again)
    assert calls == ["center"]
    cached_features(encoder, tiny_encoder_dir, processor, videos, tmp_path, "test", clips="uniform:2", progress=False)
    assert calls == ["center", "uniform:2"]
    assert len(list(tmp_path.glob("test-*.safetensors"))) == 2

    key = feature_cache_key(tiny_encoder_dir, videos, processor, "center")
    assert key != feature_cache_key(tiny_encoder_dir, videos[:-1], processor, "center")
    processor.frame_stride += 1
    assert key != feature_cache_key(tiny_encoder_dir, videos, processor, "center")


def test_eval_end_to_end(synthetic_echonet, tiny_encoder_dir, tmp_path):
    results = evaluate_representations(EvalConfig(
        model_name_or_path=str(tiny_encoder_dir), data_root=str(synthetic_echonet), output_dir=str(tmp_path),
        k=(3,), num_workers=0, disable_tqdm=True,
    ))
    assert results["classes"] == {0: "Normal", 1: "Abnormal"}
    assert results["videos"] == {"train": 8, "validation": 3, "test": 3}
    assert results["frame_stride"] == FRAME_STRIDE
    for protocol in ("knn", "linear"):
        assert 0.0 <= results[protocol]["macro_f1"] <= 1.0
    assert 0.0 <= results["anomaly"]["auroc"] <= 1.0
    assert results["anomaly"]["normal_memory"] == 5  # 8 training videos, 3 with EF < 50
    assert math.isfinite(results["ridge"]["mae"])
    # Every test score carries its bootstrap interval (10,000 resamples by default).
    for protocol, metric in (("knn", "macro_f1"), ("linear", "macro_f1"), ("ridge", "mae"), ("ridge", "r2")):
        low, high = results[protocol][f"{metric}_95ci"]
        assert low <= high, (protocol, metric)
    assert results["ridge"]["mae_95ci"][0] <= results["ridge"]["mae"] <= results["ridge"]["mae_95ci"][1]
    assert json.loads((tmp_path / "representation_metrics.json").read_text())["knn"] == results["knn"]
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 3


def test_eval_refuses_bad_setups(synthetic_echonet, tiny_encoder_dir, tmp_path):
    common = dict(model_name_or_path=str(tiny_encoder_dir), data_root=str(synthetic_echonet), output_dir=str(tmp_path),
                  num_workers=0, disable_tqdm=True)
    with pytest.raises(ValueError, match="--normal_class 'Healthy' is not one of the classes"):
        evaluate_representations(EvalConfig(**common, normal_class="Healthy", protocols=("anomaly",)))
    with pytest.raises(ValueError, match="ridge protocol regresses 'lvef'"):
        evaluate_representations(EvalConfig(**common, regression_column="lvef", protocols=("ridge",)))
    with pytest.raises(SystemExit):
        main(["--model_name_or_path", "x", "--data_root", "y", "--output_dir", "z", "--protocols", "segmentation"])


def _splits_with_signal(rng, informative: str, offset: float = 0.0):
    """Two poolings of the same videos: `informative` carries the class (and EF), the other is noise."""
    result, labels, targets = {"cls": {}, "mean": {}}, {}, {}
    for split, n in (("train", 120), ("validation", 60), ("test", 60)):
        y = rng.integers(0, 2, n)
        signal = rng.normal(size=(n, 6)) * 0.3
        signal[:, 0] += 3.0 * y
        noise = rng.normal(size=(n, 6))
        result[informative][split] = signal + offset
        result["cls" if informative == "mean" else "mean"][split] = noise + offset
        labels[split], targets[split] = y, 40.0 + 20.0 * y + rng.normal(0, 1, n)
    return result, labels, targets


@pytest.mark.parametrize("informative", ["cls", "mean"])
def test_protocols_choose_the_pooling_on_validation(informative):
    from discovr.training.evaluate_representations import (
        anomaly_protocol, knn_protocol, linear_protocol, ridge_protocol,
    )

    features, labels, targets = _splits_with_signal(np.random.default_rng(0), informative)
    knn = knn_protocol(features, labels, num_classes=2, k_values=(5, 10))
    assert knn["pooling"] == informative and knn["macro_f1"] > 0.9 and knn["k"] in (5, 10)
    assert anomaly_protocol(features, labels, normal=0)["pooling"] == informative
    assert linear_protocol(features, labels, num_classes=2)["pooling"] == informative
    ridge = ridge_protocol(features, targets)
    assert ridge["pooling"] == informative and ridge["mae"] < 3.0


def test_knn_standardises_features_when_validation_says_so():
    from discovr.training.evaluate_representations import knn_protocol

    # The class lives in a dimension of tiny raw scale next to large noisy ones, all on a large shared offset, as in
    # mean-pooled tokens: raw cosines see only the noise; z-scoring with the training split's statistics puts the
    # class dimension on an equal footing, and validation picks that.
    rng = np.random.default_rng(1)
    features, labels = {}, {}
    for split, n in (("train", 120), ("validation", 60), ("test", 60)):
        y = rng.integers(0, 2, n)
        values = rng.normal(size=(n, 4)) * [0.01, 1.0, 1.0, 1.0] + 50.0
        values[:, 0] += 0.1 * y
        features[split], labels[split] = values, y
    knn = knn_protocol({"mean": features}, labels, num_classes=2, k_values=(10,))
    assert knn["standardized"] is True and knn["macro_f1"] > 0.9


def test_features_pool_cls_and_mean_of_patch_tokens(synthetic_echonet, tiny_encoder_dir):
    from discovr.data import load_echonet_dynamic

    encoder = DiscovrModel.from_pretrained(tiny_encoder_dir).eval()
    processor = DiscovrVideoProcessor.from_pretrained(tiny_encoder_dir)
    video = list(load_echonet_dynamic(synthetic_echonet)["test"]["video"])[0]
    features = features_module.extract_features(encoder, processor, [video], progress=False)
    with torch.no_grad():
        hidden = encoder(pixel_values=processor.decode_clips(video, "center").clips()).last_hidden_state
    torch.testing.assert_close(features["cls"][0], hidden[0, 0])
    torch.testing.assert_close(features["mean"][0], hidden[0, 1:].mean(0))


def test_videomae_encoder_offers_mean_pooling_only(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEModel

    from discovr.training.evaluate_representations import load_encoder

    VideoMAEModel(VideoMAEConfig(image_size=32, num_frames=4, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=64)).save_pretrained(tmp_path)
    encoder = load_encoder(tmp_path)
    assert features_module.encoder_poolings(encoder) == ("mean",)
    hidden = torch.randn(2, 5, 3)
    torch.testing.assert_close(features_module.pool_tokens(hidden, "mean", has_cls=False), hidden.mean(1))
    with pytest.raises(ValueError, match="no CLS token"):
        features_module.pool_tokens(hidden, "cls", has_cls=False)
