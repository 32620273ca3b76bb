"""Input pre-processing defenses (nn.Modules in front of a classifier), to be attacked adaptively
with :class:`lightning_adv.attacks.BPDA` and EOT (``eot_samples``): the textbook cases (``Quantize``,
``GaussianNoise``) and the purifiers of thesis section 5.5 (DefenseGAN, the super-resolution defense)."""
from .defensegan import DefenseGAN, load_generator
from .gan import GAN_LOSSES, Critic, Generator
from .purified import Purified, PurifierUnaware, adaptive_purifier
from .sr import SRDefense, SRResNet, load_sr_net
from .transforms import GaussianNoise, Quantize
from .wavelet import WAVELET_METHODS, WAVELET_MODES, WaveletDenoise, check_wavelet, wavelet_denoise

__all__ = [
    "Critic", "DefenseGAN", "GAN_LOSSES", "GaussianNoise", "Generator", "Purified", "PurifierUnaware", "Quantize",
    "SRDefense", "SRResNet", "WAVELET_METHODS", "WAVELET_MODES", "WaveletDenoise", "adaptive_purifier",
    "check_wavelet", "load_generator", "load_sr_net", "wavelet_denoise",
]
