"""Input pre-processing defenses (nn.Modules in front of a classifier), to be attacked adaptively
with :class:`lightning_adv.attacks.BPDA` and EOT (``eot_samples``)."""
from .transforms import GaussianNoise, Quantize

__all__ = ["GaussianNoise", "Quantize"]
