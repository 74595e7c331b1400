"""Registry loaders of scene-gen's architectures: ``fn(folder: ModelFolder, device) -> nn.Module``.

``device`` is a ``soundsight.device.Device`` (a ``torch.device`` or a string also works). The
plugin registers these per architecture, so any plugin builds them with
``soundsight.registry.load(name, device)`` without importing scene-gen (latent-edit does).
Models come back in eval mode; their config is ``model.cfg``.
"""

from __future__ import annotations

IMAGE_ENCODER = "scene-image-encoder"
AUDIO_ENCODER = "scene-audio-encoder"
GAN = "scene-icgan"
LDM = "scene-ldm"
EVALUATOR = "scene-evaluator"
INSTANCES = "scene-instance-bank"


def _torch_device(device):
    import torch

    if device is None:
        return torch.device("cpu")
    return getattr(device, "torch_device", None) or torch.device(device)


def load_image_encoder(folder, device=None):
    from .encoders import ImageEncoder

    return ImageEncoder.from_registry(folder, _torch_device(device))


def load_audio_encoder(folder, device=None):
    from .encoders import AudioEncoder

    return AudioEncoder.from_registry(folder, _torch_device(device))


def load_gan(folder, device=None):
    from .gan import Generator

    return Generator.from_registry(folder, _torch_device(device))


def load_ldm(folder, device=None):
    from .ldm import SceneLDM

    return SceneLDM.from_registry(folder, _torch_device(device))


def load_evaluator(folder, device=None):
    from .evaluator import SceneEvaluator

    return SceneEvaluator.from_registry(folder, _torch_device(device))


def load_instances(folder, device=None):
    from .instances import InstanceBank

    return InstanceBank.from_registry(folder, _torch_device(device))


# architecture -> (task, loader, default model name, description)
ARCHITECTURES = {
    IMAGE_ENCODER: ("scene-image-embedding", load_image_encoder, "scene-image-encoder-64",
                    "image encoder f_V (self-supervised ResNet) for scene-gen / latent-edit"),
    AUDIO_ENCODER: ("scene-audio-embedding", load_audio_encoder, "scene-audio-encoder-64",
                    "audio encoder f_A (ResNet-18 on log-spectrograms), aligned to f_V"),
    GAN: ("scene-generation", load_gan, "scene-gan-64", "IC-GAN-style generator G(z_N, z_V), 64 px"),
    LDM: ("scene-generation", load_ldm, "scene-ldm-64", "latent diffusion back end conditioned on z_V, 64 px"),
    EVALUATOR: ("scene-evaluation", load_evaluator, "scene-evaluator-64",
                "classifier + object-size regressor judging generated scenes (evaluation only)"),
    INSTANCES: ("scene-instances", load_instances, "scene-instances-64",
                "f_V features of the training images, the instances `imagine --anchor` pulls a sound toward"),
}
