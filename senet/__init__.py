"""senet: Squeeze-and-Excitation networks and their ablation variants (Hu et al., arXiv 1709.01507).

Pure PyTorch. ``build_model(cfg_or_name)`` is the entry point; importing the package registers
every architecture of the paper's zoo.
"""
from senet.config import ModelConfig, SEConfig
from senet.recalibration import se_modules
from senet.registry import build_model, get_arch, list_archs, list_models, model_config, register, register_arch
from senet.se import SqueezeExcite, se_width
from senet.tree import apply_overrides, config_hash, from_dict, to_dict

from senet import resnet, resnet_cifar  # noqa: F401,E402  (registration)
from senet import inception_resnet_v2, mobilenet, shufflenet, vgg  # noqa: F401,E402  (registration)
from senet import inception  # noqa: F401,E402  (registration: bn_inception, se_bn_inception)

__all__ = [
    "ModelConfig", "SEConfig", "SqueezeExcite", "apply_overrides", "build_model", "config_hash", "from_dict",
    "get_arch", "list_archs", "list_models", "model_config", "register", "register_arch", "se_modules",
    "se_width", "to_dict",
]
