"""Poisoning and backdoors: attacks on the training data, detectors, defences and metrics.

Attacks (each a frozen dataclass whose settings are checked before any work)::

    from multirobust import data, poisoning, training

    train = data.load("mnist", "train")
    attack = poisoning.BadNets(rate=0.01, target=0)            # or Blended, CleanLabel
    poisoned = attack.poison(train)                            # a copy; files are never touched
    poisoned.record.indices                                    # which examples were poisoned
    result = training.fit(config, train=poisoned.dataset)      # trains like any dataset
    poisoning.backdoor_metrics(result.model, test, attack)     # clean acc., ASR, robust acc.

Detectors of poisoned training examples, scored by ``detection.evaluate(poisoned.record)``:
:func:`activation_clustering` (Chen et al. 2018) and :func:`spectral_signatures` (Tran et al.
2018). Defences on a trained model: :func:`fine_pruning` (Liu et al. 2018) and
:func:`neural_cleanse` + :func:`unlearn` (Wang et al. 2019). :mod:`.experiment` runs the whole
chain as a resumable run folder (``multirobust backdoor``).
"""

from .activation_clustering import activation_clustering
from .badnets import BadNets
from .base import MODES, BackdoorAttack, TriggeredSet
from .blended import Blended
from .clean_label import CleanLabel
from .detection import Detection, DetectionScore
from .fine_pruning import FinePruning, fine_pruning
from .finetune import finetune
from .metrics import BackdoorMetrics, backdoor_metrics, predict
from .neural_cleanse import NeuralCleanse, ReversedTrigger, neural_cleanse, reverse_trigger, unlearn
from .record import PoisonedDataset, PoisonRecord, fingerprint
from .spectral import spectral_signatures
from .triggers import BlendTrigger, PatchTrigger, Trigger, trigger_from_dict

__all__ = [
    "MODES",
    "BackdoorAttack",
    "BackdoorMetrics",
    "BadNets",
    "BlendTrigger",
    "Blended",
    "CleanLabel",
    "Detection",
    "DetectionScore",
    "FinePruning",
    "NeuralCleanse",
    "PatchTrigger",
    "PoisonRecord",
    "PoisonedDataset",
    "ReversedTrigger",
    "Trigger",
    "TriggeredSet",
    "activation_clustering",
    "backdoor_metrics",
    "fine_pruning",
    "fingerprint",
    "finetune",
    "neural_cleanse",
    "predict",
    "reverse_trigger",
    "spectral_signatures",
    "trigger_from_dict",
    "unlearn",
]
