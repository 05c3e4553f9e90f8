"""Evaluation on a labelled set: ROC/AUC with bootstrap intervals for malignant vs benign and the paper's
binary tasks, sensitivity/specificity at chosen thresholds, 3-way and 9-way accuracy, confusion matrices,
PNG plots in the style of Esteva et al. 2017 Fig. 3, and Markdown/HTML summaries.

``metrics`` (ROC, AUC, bootstrap, confusion) and ``compute`` are pure; scoring reuses triage's runner.
"""

from .metrics import auc_trapezoid, bootstrap_auc_ci, confusion_matrix, operating_point, roc_auc, roc_curve

__all__ = ["auc_trapezoid", "bootstrap_auc_ci", "confusion_matrix", "operating_point", "roc_auc", "roc_curve"]
