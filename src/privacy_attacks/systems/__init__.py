from privacy_attacks.systems.classifier import ImageClassifier

__all__ = ["ImageClassifier"]
