"""Membership inference: was this example in the model's training set?

Attacks on a target model's outputs, with shadow models trained by the ordinary fit loop::

    from multirobust import privacy

    run = privacy.MembershipRun.start("runs/mia", privacy.MembershipConfig(
        dataset="mnist", pool=60000, shadows=16, target="zoo/standard.pt",
        members="first:30000"))
    run.train_shadows()          # parallel processes, resumable
    result = run.attack()        # loss threshold, LiRA offline and online
    result.tpr("lira-online", 1e-3)

The pieces work on their own: :func:`lira_online` and :func:`lira_offline` (Carlini et al.
2022) on logit-scaled confidences (:func:`logit_confidence`), the loss-threshold baseline
(:func:`loss_score`, Yeom et al. 2018), :func:`roc_curve`, and :func:`membership_inference`,
which reports TPRs at low FPR with thresholds calibrated on shadow models only.
"""

from .experiment import MembershipConfig, MembershipRun, parse_members
from .inference import METHODS, AttackOutcome, MembershipResult, membership_inference
from .lira import lira_offline, lira_online
from .roc import Roc, roc_curve, threshold_at_fpr
from .scores import logit_confidence, logits_of, loss_score
from .shadows import ShadowJob, available_cores, membership_plan, train_shadows

__all__ = [
    "METHODS",
    "AttackOutcome",
    "MembershipConfig",
    "MembershipResult",
    "MembershipRun",
    "Roc",
    "ShadowJob",
    "available_cores",
    "lira_offline",
    "lira_online",
    "logit_confidence",
    "logits_of",
    "loss_score",
    "membership_inference",
    "membership_plan",
    "parse_members",
    "roc_curve",
    "threshold_at_fpr",
    "train_shadows",
]
