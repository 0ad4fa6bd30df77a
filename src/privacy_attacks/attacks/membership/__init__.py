"""Membership inference (the lecture's 成员推理): does an image belong to the target's training set?

``python attack.py attack=membership method=proxy|shadow|loss|confidence|entropy|modified_entropy|lira|lira_offline``.
Label convention everywhere: member = 1, non-member = 0; higher scores mean "member".
"""

from .attack import run, validate

__all__ = ["run", "validate"]
