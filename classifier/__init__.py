"""ECG rhythm classification: the trained network (``MLECGClassifier``) and the rules.

Training code lives in ``classifier.training`` and is never imported from here.
"""

from classifier.constants import CLASSES, MODEL_FS, SEGMENT_S
from classifier.inference import MLECGClassifier
from classifier.result import Classification
from classifier.rules import RuleBasedClassifier, RuleThresholds

__all__ = [
    "CLASSES",
    "MODEL_FS",
    "SEGMENT_S",
    "Classification",
    "MLECGClassifier",
    "RuleBasedClassifier",
    "RuleThresholds",
]
