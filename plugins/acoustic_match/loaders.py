"""Registry loaders of acoustic-match's architectures: ``fn(folder: ModelFolder, device) -> nn.Module``.

``device`` is a ``soundsight.device.Device`` (a ``torch.device`` or a string also works). Models
come back in eval mode with their config as ``model.cfg``:

- ``avitar``: ``model.sample_rate`` (16000), ``model.image_size`` and
  ``model.match(wave (B, 1, T), image (B, 3, S, S) in [0, 1]) -> (B, 1, T)``;
- ``rt60-estimator``: ``model.sample_rate`` and ``model.estimate(wave (B, 1, T)) -> RT60 (B,)``
  in seconds (speech band);
- ``room-params``: ``model.image_size`` and ``model.estimate(image (B, 3, S, S) in [0, 1])`` ->
  per picture ``{"rt60", "rt60_bands", "drr_db"}`` (the blind reverberator's parameters).

Nothing here imports torch at module level (``soundsight --help`` stays light).
"""

from __future__ import annotations

AVITAR = "avitar"
RT60 = "rt60-estimator"
ROOM_PARAMS = "room-params"


def _torch_device(device):
    import torch

    if device is None:
        return torch.device("cpu")
    return getattr(device, "torch_device", None) or torch.device(device)


def load_avitar(folder, device=None):
    from .avitar import AViTAR

    return AViTAR.from_registry(folder, _torch_device(device))


def load_rt60(folder, device=None):
    from .rt60_net import RT60Net

    return RT60Net.from_registry(folder, _torch_device(device))


def load_room_params(folder, device=None):
    from .room_params_net import RoomParamsNet

    return RoomParamsNet.from_registry(folder, _torch_device(device))


# architecture -> (task, loader, default model name, description)
ARCHITECTURES = {
    AVITAR: ("acoustic-match", load_avitar, "rooms-avitar-16k",
             "AViTAR visual acoustic matching: 16 kHz speech + room picture -> speech in that room"),
    RT60: ("rt60-estimation", load_rt60, "rooms-rt60-16k",
           "blind speech-band RT60 from reverberant speech (CNN on log-mel spectrograms)"),
    ROOM_PARAMS: ("room-acoustics", load_room_params, "rooms-params-128",
                  "picture of a room -> octave RT60s + DRR for the blind reverberator (rematch --mode params)"),
}
