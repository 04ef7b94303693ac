"""crossling: cross-lingual transfer studies of pre-trained self-supervised speech models."""
__version__ = "0.1.0"
