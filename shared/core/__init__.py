"""The K-Means core: decode, cluster, render — numpy, Pillow, scikit-learn and scikit-image
only; no database, broker or web framework. Entry point: :func:`.segment.segment`."""
