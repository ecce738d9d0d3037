"""Poisoning and backdoors: triggers, attacks, the record, metrics, detectors, defences.

Known answers on synthetic features (a model whose penultimate layer is its input), behaviour on
real MNIST (slow: a backdoor planted at 1% poisoning, a clean model it does not fool), and every
bad setting failing before work starts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

from multirobust import data
from multirobust.poisoning import (
    BadNets,
    Blended,
    BlendTrigger,
    CleanLabel,
    PatchTrigger,
    PoisonedDataset,
    activation_clustering,
    backdoor_metrics,
    fine_pruning,
    neural_cleanse,
    spectral_signatures,
    unlearn,
)
from multirobust.poisoning.features import channel_activity, penultimate


def _dataset(images: torch.Tensor, labels: torch.Tensor, k: int = 10) -> data.ImageDataset:
    return data.ImageDataset(
        name="mnist",
        split="train",
        images=images,
        labels=labels,
        num_classes=k,
        class_names=tuple(str(i) for i in range(k)),
    )


@pytest.fixture(scope="module")
def small_train() -> data.ImageDataset:
    return data.load("mnist", "train", limit=2000)


# --------------------------------------------------------------------------- triggers


def test_patch_trigger_stamps_exactly_its_square_and_leaves_the_input_alone():
    x = torch.full((2, 1, 28, 28), 0.25)
    before = x.clone()
    out = PatchTrigger(size=3, margin=1).apply(x)
    assert torch.equal(x, before)
    assert torch.all(out[..., 24:27, 24:27] == 1.0)
    out[..., 24:27, 24:27] = 0.25
    assert torch.equal(out, before)  # nothing outside the patch moved
    tl = PatchTrigger(size=2, margin=0, position="top-left", pattern="checkerboard").apply(x)
    assert tl[0, 0, :2, :2].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_blend_trigger_is_the_convex_mix_and_the_key_depends_only_on_the_seed():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    trig = BlendTrigger(alpha=0.2, seed=5)
    key = trig.key((1, 28, 28), torch.float32, torch.device("cpu"))
    assert torch.allclose(trig.apply(x), 0.8 * x + 0.2 * key)
    assert torch.equal(key, BlendTrigger(alpha=0.7, seed=5).key((1, 28, 28), x.dtype, x.device))
    assert not torch.equal(key, BlendTrigger(seed=6).key((1, 28, 28), x.dtype, x.device))


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_poison_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"Invalid poison rate.*\(0, 1\]"):
        BadNets(rate=rate)


def test_target_class_out_of_range_is_refused_before_poisoning(small_train):
    with pytest.raises(ValueError, match=r"Invalid target class: 10 .*0\.\.9"):
        BadNets(rate=0.01, target=10).poison(small_train)
    with pytest.raises(ValueError, match="Invalid target class: -1"):
        BadNets(rate=0.01, target=-1)


def test_trigger_larger_than_the_image_is_refused(small_train):
    with pytest.raises(ValueError, match=r"Invalid trigger size: 28 .* does not fit in 28 x 28"):
        BadNets(rate=0.01, patch=PatchTrigger(size=28, margin=1)).poison(small_train)
    with pytest.raises(ValueError, match="Invalid trigger size: 0"):
        PatchTrigger(size=0)


def test_other_bad_settings_say_what_is_allowed(small_train):
    with pytest.raises(ValueError, match="Invalid mode: 'one-to-one'"):
        BadNets(rate=0.1, mode="one-to-one")
    with pytest.raises(ValueError, match="poisons no example of 2000"):
        BadNets(rate=1e-4).poison(small_train)
    with pytest.raises(ValueError, match="only .* examples of the target class 0 can be"):
        CleanLabel(rate=0.5, surrogate=nn.Flatten()).check(small_train)
    with pytest.raises(ValueError, match="clean-label attack is all-to-one"):
        CleanLabel(rate=0.01, mode="all-to-all", surrogate=nn.Flatten())
    with pytest.raises(ValueError, match=r"Invalid threat: spatial.*needs an ℓp ball"):
        CleanLabel(rate=0.01, surrogate=nn.Flatten(), threat="spatial:30,3")
    with pytest.raises(ValueError, match="Invalid blend alpha"):
        BlendTrigger(alpha=0.0)


# --------------------------------------------------------------------------- poisoning


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_poisoning_never_touches_the_dataset_files_or_the_clean_tensors(tmp_path):
    folder = data.data_root() / data.spec("mnist").folder
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert files, "the MNIST files must be there for this test"
    before = {p: (_sha(p), p.stat().st_mtime_ns) for p in files}
    clean = data.load("mnist", "train", limit=3000)
    images, labels = clean.images.clone(), clean.labels.clone()
    for attack in (BadNets(rate=0.05), Blended(rate=0.05, mode="all-to-all")):
        poisoned = attack.poison(clean)
        poisoned.save(tmp_path / attack.name)
    assert torch.equal(clean.images, images) and torch.equal(clean.labels, labels)
    assert {p: (_sha(p), p.stat().st_mtime_ns) for p in files} == before
    assert sorted(p for p in folder.iterdir() if p.is_file()) == files


def test_badnets_poisons_the_chosen_examples_only_and_records_them(small_train):
    attack = BadNets(rate=0.05, target=3, seed=1)
    p = attack.poison(small_train)
    rec = p.record
    assert len(rec.indices) == 100 and rec.size == 2000
    assert torch.all(rec.original_labels != 3)  # drawn outside the target class
    assert torch.all(p.dataset.labels[rec.indices] == 3)
    assert torch.equal(rec.original_labels, small_train.labels[rec.indices])
    untouched = ~rec.mask
    assert torch.equal(p.dataset.images[untouched], small_train.images[untouched])
    assert torch.equal(p.dataset.labels[untouched], small_train.labels[untouched])
    assert torch.all(p.dataset.images[rec.indices][..., 24:27, 24:27] == 1.0)
    again = BadNets(rate=0.05, target=3, seed=1).poison(small_train)
    assert torch.equal(again.record.indices, rec.indices)  # same seed, same poisoning
    other = BadNets(rate=0.05, target=3, seed=2).poison(small_train)
    assert not torch.equal(other.record.indices, rec.indices)


def test_all_to_all_sends_each_class_to_the_next(small_train):
    p = BadNets(rate=0.1, mode="all-to-all").poison(small_train)
    rec = p.record
    assert torch.equal(rec.labels, (rec.original_labels + 1) % 10)
    test = data.load("mnist", "test", limit=50)
    trig = BadNets(rate=0.1, mode="all-to-all").triggered(test)
    assert len(trig.labels) == 50  # every test input counts for all-to-all
    assert torch.equal(trig.targets, (test.labels + 1) % 10)


def test_record_round_trip_and_refusal_of_other_data(small_train, tmp_path):
    p = Blended(rate=0.02, target=1).poison(small_train)
    p.save(tmp_path)
    back = PoisonedDataset.load(tmp_path, small_train)
    assert torch.equal(back.dataset.images, p.dataset.images)
    assert torch.equal(back.dataset.labels, p.dataset.labels)
    assert torch.equal(back.record.indices, p.record.indices)
    other = data.load("mnist", "train", limit=1999)
    with pytest.raises(ValueError, match="was made from other data"):
        PoisonedDataset.load(tmp_path, other)


def test_defender_reserve_is_never_poisoned(small_train):
    exclude = torch.arange(0, 2000, 2)
    p = BadNets(rate=0.2).poison(small_train, exclude=exclude)
    assert not bool(p.record.mask[exclude].any())


class _Linear(nn.Module):
    """A fixed linear classifier on flattened images (known gradients for the surrogate)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(10, 784, generator=g) * 0.05)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_clean_label_keeps_labels_and_stays_in_the_threat_model_outside_the_trigger(small_train):
    attack = CleanLabel(rate=0.01, target=2, surrogate=_Linear(), threat="linf:0.1", steps=5)
    p = attack.poison(small_train)
    rec = p.record
    assert torch.equal(rec.labels, rec.original_labels)
    assert torch.all(rec.original_labels == 2)
    x0 = small_train.images[rec.indices]
    x1 = p.dataset.images[rec.indices]
    outside = torch.ones(28, 28, dtype=torch.bool)
    outside[24:27, 24:27] = False
    delta = (x1 - x0)[..., outside]
    assert float(delta.abs().max()) <= 0.1 + 1e-6
    assert float(delta.abs().max()) > 0.05  # the perturbation is really there
    # the checkerboard is stamped on top
    assert x1[0, 0, 24:27, 24:27].tolist()[0] == [1.0, 0.0, 1.0]


# --------------------------------------------------------------------------- metrics


class _Constant(nn.Module):
    """Always predicts ``cls`` (or the true label on untriggered-looking inputs)."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 10) + self.w
        out[:, self.cls] = 1.0
        return out


def test_metrics_on_models_with_known_answers():
    test = data.load("mnist", "test", limit=200)
    attack = BadNets(rate=0.1, target=4)
    m = backdoor_metrics(_Constant(4), test, attack)
    assert m.attack_success_rate == 1.0 and m.robust_accuracy == 0.0
    assert m.n_triggered == int((test.labels != 4).sum())
    assert m.clean_accuracy == pytest.approx(float((test.labels == 4).float().mean()))
    m0 = backdoor_metrics(_Constant(5), test, attack)
    assert m0.attack_success_rate == 0.0


def test_a_clean_model_is_not_fooled_by_the_trigger(mnist_model, mnist_test):
    """The metric can fail: a model trained on clean data sends triggered inputs to the target
    no more often than chance (1/10 of the non-target inputs; measured ~1%, so the margin is
    wide)."""
    m = backdoor_metrics(mnist_model, mnist_test, BadNets(rate=0.01, target=0))
    assert m.attack_success_rate < 0.1
    assert m.robust_accuracy > 0.9


# --------------------------------------------------------------------------- detectors


class _Features(nn.Module):
    """Images (N, 1, 1, d) whose penultimate representation is the input itself."""

    def __init__(self, d: int, k: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.body = nn.Linear(d, d)
        self.head = nn.Linear(d, k)
        with torch.no_grad():
            self.body.weight.copy_(torch.eye(d))
            self.body.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.flatten(x)))


def _planted(poison_shift: float, n: int = 200, planted: int = 20, d: int = 16):
    """Ten classes of Gaussian features; ``planted`` examples of class 0 shifted far away."""
    g = torch.Generator().manual_seed(0)
    feats, labels = [], []
    for c in range(10):
        centre = 0.3 + 0.4 * torch.rand(d, generator=g)
        feats.append((centre + 0.03 * torch.randn(n, d, generator=g)).clamp(0, 1))
        labels.append(torch.full((n,), c))
    x = torch.cat(feats)
    y = torch.cat(labels)
    idx = torch.arange(planted)  # the first examples of class 0
    direction = torch.zeros(d)
    direction[:3] = 1.0
    x[idx] = (x[idx] + poison_shift * direction).clamp(0, 1)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[idx] = True
    return _dataset(x.view(-1, 1, 1, d), y), mask


def _score(found, mask):
    tp = int((found.flagged & mask).sum())
    return tp / max(int(found.flagged.sum()), 1), tp / int(mask.sum())


def test_penultimate_reads_the_input_of_the_last_linear_layer():
    ds, _ = _planted(0.0, n=10)
    assert torch.allclose(penultimate(_Features(16), ds.images), ds.images.flatten(1))


@pytest.mark.parametrize("reduce", ["ica", "pca"])
def test_activation_clustering_finds_a_planted_cluster_and_nothing_in_clean_classes(reduce):
    ds, mask = _planted(0.25)
    # Four kept dimensions: ICA whitens, so each kept noise dimension weighs as much as the
    # planted one; at the default ten, 9 of 16 isotropic noise dimensions hold a 10% cluster's
    # silhouette to 0.20 (below the 0.25 cut) although 2-means isolates it exactly. At four
    # the planted class scores 0.43 (ICA) / 0.79 (PCA) and the clean classes at most 0.19:
    # both sides of 0.25 with a margin.
    found = activation_clustering(_Features(16), ds, reduce=reduce, dims=4, seed=0)
    precision, recall = _score(found, mask)
    # 20 planted among 2000 (chance precision 1%); the shift is 8σ along three dimensions.
    assert precision > 0.9 and recall > 0.9
    assert found.suspicious_classes == [0]
    clean, _ = _planted(0.0)
    flagged = activation_clustering(_Features(16), clean, reduce=reduce, dims=4).flagged
    assert int(flagged.sum()) == 0


def test_spectral_signatures_find_a_planted_cluster_along_the_top_direction():
    ds, mask = _planted(0.25)
    found = spectral_signatures(_Features(16), ds, eps=0.1)
    score = found.evaluate(_record(mask))
    assert score.recall == 1.0  # 1.5·ε·200 = 30 removed from class 0: all 20 planted among them
    # Tran et al. remove 1.5·ε of every class: 30 of 200 in each, by design.
    assert score.flagged == 10 * 30


def _record(mask):
    from multirobust.poisoning import PoisonRecord

    idx = mask.nonzero().flatten()
    return PoisonRecord(
        indices=idx,
        original_labels=torch.zeros(len(idx), dtype=torch.long),
        labels=torch.zeros(len(idx), dtype=torch.long),
        size=len(mask),
        attack={},
        clean_fingerprint="",
    )


def test_detector_settings_are_checked():
    ds, _ = _planted(0.0, n=10)
    with pytest.raises(ValueError, match="Invalid reduce: 'tsne'"):
        activation_clustering(_Features(16), ds, reduce="tsne")
    with pytest.raises(ValueError, match="Invalid eps: 0.9"):
        spectral_signatures(_Features(16), ds, eps=0.9)
    with pytest.raises(ValueError, match="no nn.Conv2d layer"):
        channel_activity(_Features(16), ds.images)


# --------------------------------------------------------------------------- defences


def test_fine_pruning_zeroes_dormant_channels_and_leaves_the_input_model_alone(mnist_model):
    clean = data.load("mnist", "test", limit=300)
    before = {k: v.clone() for k, v in mnist_model.state_dict().items()}
    res = fine_pruning(mnist_model, clean, max_drop=0.05, epochs=1)
    for k, v in mnist_model.state_dict().items():
        assert torch.equal(v, before[k])
    assert 0 < len(res.pruned) < res.channels
    w = res.model.conv3.weight
    assert float(w[res.pruned].abs().max()) == 0.0  # still pruned after fine-tuning
    # the least active channels went first
    act = torch.tensor(res.activity)
    assert float(act[res.pruned].max()) <= float(
        act[[c for c in range(64) if c not in res.pruned]].min()
    )
    assert res.accuracy_pruned >= res.accuracy_before - 0.05


def test_neural_cleanse_anomaly_index_and_unlearning_without_a_flag(mnist_model):
    clean = data.load("mnist", "test", limit=200)
    nc = neural_cleanse(mnist_model, clean, epochs=1, seed=0)
    assert len(nc.triggers) == 10 and len(nc.anomaly_index) == 10
    l1 = [t.l1 for t in nc.triggers]
    med = sorted(l1)[4:6]
    assert nc.median == pytest.approx(sum(med) / 2)
    for t in nc.flagged:
        assert l1[t] < nc.median and nc.anomaly_index[t] > 2
    if not nc.flagged:
        same = unlearn(mnist_model, clean, nc, epochs=1)
        for (k, v), w in zip(
            same.state_dict().items(), mnist_model.state_dict().values(), strict=True
        ):
            assert torch.equal(v, w), k


# --------------------------------------------------------------------------- MNIST behaviour


@pytest.fixture(scope="module")
def backdoored(tmp_path_factory):
    """small_cnn trained 4 epochs on 6000 MNIST images, 1% of them BadNets-poisoned."""
    from multirobust.training import TrainConfig, fit

    train = data.load("mnist", "train", limit=6000)
    attack = BadNets(rate=0.01, target=0)
    poisoned = attack.poison(train)
    cfg = TrainConfig(
        method="standard",
        epochs=4,
        batch_size=64,
        schedule="constant",
        eval_n=50,
        eval_steps=1,
        progress=False,
        out=str(tmp_path_factory.mktemp("backdoor")),
    )
    return attack, poisoned, fit(cfg, train=poisoned.dataset).model


@pytest.mark.slow
def test_badnets_at_one_percent_plants_a_backdoor_in_a_few_epochs(backdoored):
    attack, poisoned, model = backdoored
    assert len(poisoned.record.indices) == 60
    m = backdoor_metrics(model, data.load("mnist", "test", limit=1000), attack)
    # Measured 0.92 ASR after 3 epochs and higher after 4; chance is 0.1.
    assert m.attack_success_rate > 0.8
    assert m.clean_accuracy > 0.9


@pytest.mark.slow
def test_activation_clustering_finds_the_planted_mnist_examples(backdoored):
    _, poisoned, model = backdoored
    found = activation_clustering(model, poisoned.dataset)
    s = found.evaluate(poisoned.record)
    # Chance precision is 1%; measured precision and recall 1.0 at this setting.
    assert s.precision > 0.5 and s.recall > 0.5
    assert 0 in found.suspicious_classes


@pytest.mark.slow
def test_neural_cleanse_flags_the_target_and_unlearning_removes_the_backdoor(backdoored):
    attack, _, model = backdoored
    clean = data.load("mnist", "test", limit=1000)
    defender, test = _split(clean)
    nc = neural_cleanse(model, defender, epochs=5, seed=0)
    assert nc.flagged == [0]
    fixed = unlearn(model, defender, nc, epochs=3)
    before = backdoor_metrics(model, test, attack)
    after = backdoor_metrics(fixed, test, attack)
    assert after.attack_success_rate < before.attack_success_rate / 2


def _split(ds: data.ImageDataset) -> tuple[data.ImageDataset, data.ImageDataset]:
    half = len(ds) // 2
    a = _dataset(ds.images[:half], ds.labels[:half])
    b = _dataset(ds.images[half:], ds.labels[half:])
    return a, b


def test_a_detector_that_flags_nothing_is_not_called_precise():
    # Precision is 1.0 by convention when nothing is flagged; the summary must not print
    # "precision 100%" for a detector that found none of the poisoned examples.
    from multirobust.poisoning.report import detection_line

    silent = {"precision": 1.0, "recall": 0.0, "flagged": 0, "poisoned": 60,
              "true_positives": 0}  # fmt: skip
    line = detection_line("spectral", silent)
    assert "flagged nothing" in line and "precision" not in line and "0 of 60" in line
    found = {"precision": 0.5, "recall": 1.0, "flagged": 120, "poisoned": 60,
             "true_positives": 60}  # fmt: skip
    assert detection_line("ac", found) == (
        "ac: precision 50.00%, recall 100.00% (60 of 60 poisoned among 120 flagged)"
    )
