"""The attacks: one subpackage per family (reconstruction, stealing, membership)."""
