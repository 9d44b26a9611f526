"""icefall-ssl: self-supervised speech learning (k2SSL, SpidR/DinoSR, self-pinching gates)."""

__version__ = "0.1.0"
