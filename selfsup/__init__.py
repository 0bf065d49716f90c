"""selfsup: self-supervised pretraining methods on one Lightning base, configured by Hydra."""

__version__ = "0.1.0"
