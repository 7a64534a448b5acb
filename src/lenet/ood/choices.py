"""The out-of-distribution detectors' names (`--detector`): torch-free, for the command
line; detectors.py builds them (a test holds the two lists equal)."""

DETECTORS = ("msp", "energy", "mahalanobis", "knn", "pixels", "combined")
