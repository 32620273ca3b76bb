"""Model zoo: CIFAR backbones of the authors' code, small models, and a registry.

Every model takes images in [0, 1] and returns logits; mean/std normalisation (identity by
default, as in the authors' code) is its first layer, ``model.normalize``.

Registered names (``list_models()``):

======================  ===========================================================
``resnet18``            kuangliu CIFAR ResNet-18 (ARD student), 11.17M params
``resnet18_noskip``     the same without shortcuts (thesis table 6.8)
``resnet34``            kuangliu CIFAR ResNet-34
``mobilenetv2``         kuangliu CIFAR MobileNetV2 (ARD student), 2.30M params
``wideresnet``          TRADES WideResNet, any depth / widen factor
``wrn34_10``            TRADES WRN-34-10 (ARD teacher), 46.16M used params
``wideresnet_nobn``     WideResNet without BatchNorm (thesis figure 6.5)
``wideresnet_noskip``   WideResNet without skip connections (figure 6.5)
``densenet``            CIFAR DenseNet, any depth / growth rate (no bottleneck)
``densenet40``          DenseNet-40, k=12 (tables 6.5-6.7), 1.0M params
``fixup_resnet``        CIFAR ResNet with Fixup initialisation, no BatchNorm
``fixup_resnet20``      Fixup ResNet-20 (tables 6.6-6.7), 0.27M params
``convnet6``            six-layer ConvNet width family (NTK sweep, figure 6.1)
``small_cnn``           small CNN for 8x8 digits / 28x28 MNIST (grey by default)
``mlp``                 configurable MLP on flattened images
``dm_small``            Gowal et al. 2018's small CNN for certified training (0.55M params on MNIST)
``dm_medium``           Gowal et al. 2018's medium CNN (1.97M params on MNIST)
``dm_large``            Gowal et al. 2018's large CNN, CROWN-IBP's DM-large (13.3M params on MNIST)
``madry_cnn``           Madry et al. 2018 MNIST CNN (conv32-conv64 5x5, fc1024)
``r2d2_embedding``      R2-D2 few-shot backbone 96-192-384-512 (+ feature denoising), features out
``conv4``               ProtoNet Conv-4 few-shot backbone, features out
``resnet12``            MetaOptNet ResNet-12 few-shot backbone, features out
======================  ===========================================================

Use ``create_model(name, **kwargs)`` and ``load_model_weights(model, path)``.
"""
from .convnet import ConvNet6
from .densenet import DenseNet
from .fewshot import Conv4, FeatureDenoise, R2D2Embedding, ResNet12
from .fixup import FixupBasicBlock, FixupResNet
from .madry import MadryCNN
from .mobilenetv2 import InvertedResidual, MobileNetV2
from .normalize import Normalize
from .registry import create_model, list_models, load_model_weights, model_class, model_preset, register_model
from .resnet import BasicBlock, ResNet, ResNet18, ResNet34
from .small import ACTIVATIONS, MLP, SmallCNN
from .certified_cnn import CertifiedCNN
from .wideresnet import NetworkBlock, WideBasicBlock, WideResNet

__all__ = [
    "Normalize",
    "register_model",
    "create_model",
    "list_models",
    "model_class",
    "model_preset",
    "load_model_weights",
    "BasicBlock",
    "MadryCNN",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "InvertedResidual",
    "MobileNetV2",
    "WideBasicBlock",
    "NetworkBlock",
    "WideResNet",
    "SmallCNN",
    "CertifiedCNN",
    "MLP",
    "ACTIVATIONS",
    "ConvNet6",
    "DenseNet",
    "FixupBasicBlock",
    "FixupResNet",
    "R2D2Embedding",
    "Conv4",
    "ResNet12",
    "FeatureDenoise",
]
