"""A picture of a room -> its acoustic parameters (the blind reverberator's, from an image).

Outputs exactly what ``acoustics.blind_estimate`` gives the blind reverberator and
``acoustics.synthetic_ir`` renders: the speech-band RT60 (177 Hz .. 5.7 kHz, the number reported
across methods), one RT60 per octave of ``acoustics.BLIND_BANDS`` (250 Hz .. 4 kHz) and the
direct-to-reverberant ratio (dB, +-2.5 ms window). RT60s are predicted in log seconds (they
span a decade, errors are relative), DRR in units of ``DRR_SCALE`` dB so both terms of the loss
have a similar size.

Network: a small ResNet (GroupNorm, so a prediction never depends on the rest of the batch):
a 3 x 3 stride-2 stem, four stages of one basic block each (widths w, 2w, 4w, 8w; each stage
halves the resolution), global mean and max pooling (room size is a global property; a
window or curtain is a local one), a two-layer head. At w = 16: 0.32 M parameters (any input size; trained at 128 px).
``estimate`` averages the picture and its mirror image (a mirrored room sounds the same).

``physics=True`` (the shipped model since the physics head): the network does not regress the
parameters directly. An auxiliary head reads the room off the picture (log width, depth,
height, log speaker distance, and a material class per surface, trained on the dataset's true
geometry and classes), and the parameters come from Eyring's formula on that room, with the
expected absorption of each surface under its class probabilities (the model carries a table
of each class's mean absorption per octave, a buffer saved with the weights), plus the
critical-distance DRR; the direct head only adds a correction, starting at zero. With
``vocabulary="material"`` the head names each surface's material instead of its class (for pictures
from ``rooms build --textures material``, which give each material its own look) and the table
holds each material's own absorption. Why: a
picture shows a room's size and its surfaces' material classes, and RT60 is a fixed nonlinear
function of those, which 1500 training pictures teach a plain regressor only roughly. Measured
(README, same budget): lower validation loss, octave RT60 and DRR errors than the plain
regressor; the speech-band error is level.

``dense=True`` (with physics; the shipped model since): a second head on the 1/4-resolution
feature maps labels each cell with the surface it shows (``REGIONS``) and that surface's
vocabulary entry, trained per pixel on the renderer's own geometry; each visible surface's
entry log-probabilities, pooled over its cells, are added to the global head's logits. Why: one
label per surface per picture taught the grazing side walls poorly; per-pixel labels read them
(README: side-wall classes 53-55 % -> 77-82 % right on unseen rooms, lower RT60 and DRR errors).

Only torch is imported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE = "room-params"
TASK = "room-acoustics"
BANDS = (250, 500, 1000, 2000, 4000)  # == acoustics.BLIND_BANDS (asserted in the tests)
RT60_NAMES = ("rt60_speech",) + tuple(f"rt60_{b}" for b in BANDS)
OUTPUTS = RT60_NAMES + ("drr",)
DRR_SCALE = 10.0  # dB per output unit

# The physics head's vocabulary (== soundsight_train.rooms' classes, materials and air absorption,
# asserted in the tests). The order of SURFACES is pyroomacoustics'; the camera looks north.
SURFACES = ("floor", "ceiling", "west", "east", "south", "north")
FLOOR_CLASSES = ("carpet", "wood", "concrete", "tile")
CEILING_CLASSES = ("plaster", "acoustic_tile", "wood", "concrete")
WALL_CLASSES = ("plaster", "brick", "concrete", "wood", "tile", "glass", "curtains", "panels")
AIR_M = (0.0003, 0.0006, 0.001, 0.0024, 0.0068)  # energy attenuation of air (1/m) at BANDS
# pyroomacoustics materials of each class, in the room sampler's order
MATERIALS = {
    "floor": {
        "carpet": ("carpet_cotton", "carpet_tufted_9.5mm", "carpet_thin", "carpet_6mm_closed_cell_foam",
                   "carpet_6mm_open_cell_foam", "carpet_tufted_9m", "carpet_soft_10mm", "carpet_hairy", "felt_5mm"),
        "wood": ("wood_16mm", "audience_floor", "stage_floor", "wood_1.6cm"),
        "concrete": ("concrete_floor", "rough_concrete", "unpainted_concrete"),
        "tile": ("ceramic_tiles", "marble_floor", "linoleum_on_concrete"),
    },
    "ceiling": {
        "plaster": ("ceiling_plasterboard", "hard_surface", "plasterboard"),
        "acoustic_tile": ("ceiling_fissured_tile", "ceiling_perforated_gypsum_board", "ceiling_fibre_absorber",
                          "ceiling_melamine_foam", "ceiling_metal_panel"),
        "wood": ("wooden_lining", "wood_16mm"),
        "concrete": ("rough_concrete", "unpainted_concrete"),
    },
    "wall": {
        "plaster": ("hard_surface", "plasterboard", "rough_lime_wash"),
        "brick": ("brickwork", "brick_wall_rough", "smooth_brickwork_flush_pointing",
                  "smooth_brickwork_10mm_pointing", "facing_brick"),
        "concrete": ("rough_concrete", "unpainted_concrete"),
        "wood": ("wooden_lining", "wood_1.6cm", "plywood_thin", "wood_16mm"),
        "tile": ("ceramic_tiles", "limestone_wall"),
        "glass": ("glass_3mm", "glass_window", "double_glazing_30mm", "double_glazing_10mm"),
        "curtains": ("curtains_cotton_0.5", "curtains_0.2", "curtains_densely_woven", "curtains_velvet",
                     "curtains_fabric", "curtains_fabric_folded", "studio_curtains"),
        "panels": ("panel_fabric_covered_6pcf", "panel_fabric_covered_8pcf", "rockwool_50mm_80kgm3",
                   "fibre_absorber_1", "mineral_wool_50mm_40kgm3"),
    },
}
# what the head names per surface: its visual class ("class", the first shipped model) or its
# material ("material": for pictures with a look per material, rooms build --textures material)
VOCABULARIES = ("class", "material")
GEOMETRY = ("log_width", "log_depth", "log_height", "log_distance")
# what each pixel of a picture shows, for the dense head (== soundsight_train.rooms.surface_map's
# labels, asserted in the tests): the six faces, the speaker, a door
REGIONS = SURFACES + ("speaker", "door")
# every surface but the wall behind the camera (south), which no picture shows
VISIBLE_SURFACES = tuple(s for s in SURFACES if s != "south")


def group(surface: str) -> str:
    return surface if surface in ("floor", "ceiling") else "wall"


def surface_classes(surface: str) -> tuple:
    return FLOOR_CLASSES if surface == "floor" else CEILING_CLASSES if surface == "ceiling" else WALL_CLASSES


def vocabulary_of(surface: str, vocabulary: str = "class") -> tuple:
    """The names the head scores for ``surface`` (or a group: "wall"): its classes, or all its
    classes' materials in class order (a material name is unique within a group)."""
    if vocabulary == "class":
        return surface_classes(surface)
    if vocabulary != "material":
        raise ValueError(f"vocabulary must be one of {VOCABULARIES}, got {vocabulary!r}")
    table = MATERIALS[group(surface)]
    return tuple(m for c in surface_classes(surface) for m in table[c])


def class_of_entry(surface: str, vocabulary: str = "class") -> tuple:
    """Class index of each vocabulary entry (the identity for "class")."""
    if vocabulary == "class":
        return tuple(range(len(surface_classes(surface))))
    table = MATERIALS[group(surface)]
    return tuple(i for i, c in enumerate(surface_classes(surface)) for _ in table[c])


def table_rows(vocabulary: str = "class") -> dict:
    """First row of each group (floor, ceiling, wall) in the absorption table, and the total."""
    rows, k = {}, 0
    for g in ("floor", "ceiling", "wall"):
        rows[g] = k
        k += len(vocabulary_of(g, vocabulary))
    rows["total"] = k
    return rows


def n_aux(vocabulary: str = "class") -> int:
    """Auxiliary outputs: log W, log D, log H (m), log speaker distance (m), then the logits of each
    surface's vocabulary."""
    return len(GEOMETRY) + sum(len(vocabulary_of(s, vocabulary)) for s in SURFACES)


# the class vocabulary's layout (the first shipped model's)
CLASS_ROWS = {g: r for g, r in table_rows("class").items() if g != "total"}
N_CLASS_ROWS = table_rows("class")["total"]
N_AUX = n_aux("class")


@dataclass
class RoomParamsConfig:
    image_size: int = 128
    width: int = 16
    hidden: int = 64
    stem_stride: int = 2  # 4: a 3 x 3 max-pool after the stride-2 stem conv (ResNet's stem; 4x fewer operations)
    dropout: float = 0.1
    # output offsets (the training set's means: log seconds, DRR in DRR_SCALE units)
    init_log_rt60: float = math.log(0.7)
    init_drr: float = -0.65
    physics: bool = False  # Eyring on a room read off the picture (module docstring)
    vocabulary: str = "class"  # what the physics head names per surface: "class" or "material"
    # 0: global mean + max pooling only (the first models). G > 0: the heads also see the last
    # feature map averaged to G x G cells (after a 1 x 1 conv to grid_channels): where a texture
    # is says which surface it is (floor at the bottom, ceiling at the top, walls at the sides)
    grid: int = 0
    grid_channels: int = 16
    init_geometry: tuple = (1.3, 1.6, 1.1, 0.7)  # offsets of GEOMETRY (the training rooms' means)
    # dense head (physics only): per pixel of the 1/4-resolution map, which region it shows and
    # its vocabulary entry; each visible surface's entry log-probabilities, averaged over the
    # pixels the head assigns to it, are added to the global head's logits. Why: a surface's
    # material is a texture a few pixels across, and one label per surface per picture was too
    # weak a signal to learn it from (README)
    dense: bool = False
    dense_channels: int = 32

    @classmethod
    def preset(cls, name: str, **overrides) -> "RoomParamsConfig":
        presets = {"tiny": dict(width=4, hidden=8, image_size=32), "cpu": dict()}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "RoomParamsConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["init_geometry"] = [float(v) for v in d["init_geometry"]]  # as JSON gives it back
        return d


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, max(1, c // 4)), c)


class BasicBlock(nn.Module):
    """Two 3 x 3 convs with a residual; the first conv strides (and a 1 x 1 conv matches the
    shortcut) when the resolution or width changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))

    def forward(self, x):
        h = F.relu(self.n1(self.c1(x)))
        h = self.n2(self.c2(h))
        return F.relu(h + (x if self.short is None else self.short(x)))


class RoomParamsNet(nn.Module):
    def __init__(self, cfg: RoomParamsConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        stem = [nn.Conv2d(3, w, 3, 2, 1, bias=False), _norm(w), nn.ReLU()]
        if cfg.stem_stride == 4:
            stem.append(nn.MaxPool2d(3, 2, 1))
        elif cfg.stem_stride != 2:
            raise ValueError(f"stem_stride must be 2 or 4, got {cfg.stem_stride}")
        self.stem = nn.Sequential(*stem)
        widths = [w, 2 * w, 4 * w, 8 * w]
        blocks, c = [], w
        for k, cout in enumerate(widths):
            blocks.append(BasicBlock(c, cout, 1 if k == 0 else 2))
            c = cout
        self.body = nn.Sequential(*blocks)
        n_feat = 2 * c
        if cfg.grid:
            self.to_grid = nn.Sequential(nn.Conv2d(c, cfg.grid_channels, 1, bias=False), _norm(cfg.grid_channels), nn.ReLU())
            n_feat += cfg.grid_channels * cfg.grid * cfg.grid
        self.head = nn.Sequential(nn.Linear(n_feat, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(cfg.hidden, len(OUTPUTS)))
        nn.init.zeros_(self.head[-1].weight)
        if not cfg.physics:  # start at the offsets: the training set's means
            with torch.no_grad():
                self.head[-1].bias[: len(RT60_NAMES)] = cfg.init_log_rt60
                self.head[-1].bias[len(RT60_NAMES):] = cfg.init_drr
        else:  # the direct head is a correction of the physics estimate: zero at the start
            nn.init.zeros_(self.head[-1].bias)
            self.aux = nn.Sequential(nn.Linear(n_feat, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, n_aux(cfg.vocabulary)))
            with torch.no_grad():
                self.aux[-1].weight.mul_(0.1)
                self.aux[-1].bias.zero_()
                self.aux[-1].bias[: len(GEOMETRY)] = torch.tensor(cfg.init_geometry, dtype=torch.float32)
            # absorption per vocabulary entry and octave (BANDS): a class's mean over its materials,
            # or a material's own; the trainer fills it from the room simulator's material
            # database and it is saved with the weights (the name is the first model's)
            rows = table_rows(cfg.vocabulary)["total"]
            self.register_buffer("class_absorption", torch.full((rows, len(BANDS)), 0.1))
        if cfg.dense:
            if not cfg.physics:
                raise ValueError("dense needs physics (it refines the physics head's surface reading)")
            dc = cfg.dense_channels
            self.lateral = nn.ModuleList(nn.Conv2d(cw, dc, 1, bias=False) for cw in widths[1:])
            self.dense_head = nn.Sequential(nn.Conv2d(dc, dc, 3, 1, 1, bias=False), _norm(dc), nn.ReLU(),
                                            nn.Conv2d(dc, len(REGIONS) + table_rows(cfg.vocabulary)["total"], 1))

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_state(cls, config: dict, state: dict, device=None) -> "RoomParamsNet":
        model = cls(RoomParamsConfig.from_dict(config))
        model.load_state_dict(state)
        if device is not None:
            model = model.to(device)
        return model.eval()

    @classmethod
    def from_registry(cls, folder, device=None) -> "RoomParamsNet":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return cls.from_state(folder.config, folder.tensors("model.safetensors", device="cpu"), dev)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, len(OUTPUTS)): log RT60s (s), then DRR / DRR_SCALE."""
        return self.forward_parts(image)[0]

    def forward_parts(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The outputs and, with ``physics``, the auxiliary room reading (B, n_aux): GEOMETRY,
        then each surface's vocabulary logits in SURFACES order (None without ``physics``)."""
        return self.forward_all(image)[:2]

    def forward_all(self, image: torch.Tensor):
        """``forward_parts`` and, with ``dense``, the dense head's logits (B, len(REGIONS) + vocabulary
        rows, S/4, S/4) (else None)."""
        x = self.stem((image - 0.5) / 0.25)
        maps = []
        for block in self.body:
            x = block(x)
            maps.append(x)
        fmap = maps[-1]
        h = fmap.flatten(2)
        feat = [h.mean(-1), h.amax(-1)]
        if self.cfg.grid:
            feat.append(F.adaptive_avg_pool2d(self.to_grid(fmap), self.cfg.grid).flatten(1))
        feat = torch.cat(feat, dim=1)
        out = self.head(feat)
        if not self.cfg.physics:
            return out, None, None
        aux = self.aux(feat)
        dense = None
        if self.cfg.dense:
            size = maps[1].shape[-2:]
            fused = sum(F.interpolate(lat(m), size=size, mode="bilinear", align_corners=False) if k else lat(m)
                        for k, (lat, m) in enumerate(zip(self.lateral, maps[1:])))
            dense = self.dense_head(F.relu(fused))
            aux = aux + pooled_dense_logits(dense, self.cfg.vocabulary)
        return out + eyring_outputs(aux, self.class_absorption, self.cfg.vocabulary), aux, dense

    @torch.no_grad()
    def estimate(self, image: torch.Tensor) -> list[dict]:
        """Per picture: ``{"rt60": s (speech band), "rt60_bands": {250: s, ..., 4000: s},
        "drr_db": dB}``, averaged over the picture and its mirror image."""
        was = self.training
        self.eval()
        out = 0.5 * (self.forward(image) + self.forward(torch.flip(image, dims=[-1])))
        self.train(was)
        return [decode(row) for row in out.float().cpu()]


def split_aux(aux: torch.Tensor, vocabulary: str = "class") -> tuple[torch.Tensor, dict]:
    """(B, n_aux) -> GEOMETRY columns (B, 4) and {surface: vocabulary logits}."""
    logits, k = {}, len(GEOMETRY)
    for s in SURFACES:
        n = len(vocabulary_of(s, vocabulary))
        logits[s] = aux[:, k: k + n]
        k += n
    return aux[:, : len(GEOMETRY)], logits


def eyring_outputs(aux: torch.Tensor, absorption: torch.Tensor, vocabulary: str = "class") -> torch.Tensor:
    """Eyring RT60 per octave (and its geometric mean for the speech band) and the critical-distance
    DRR of the room that ``aux`` describes, in the network's output units. Each surface absorbs
    the absorption of its vocabulary's entries weighted by the predicted probabilities."""
    geo, logits = split_aux(aux.float(), vocabulary)
    first = table_rows(vocabulary)
    dims = geo[:, :3].clamp(-1.0, 4.0).exp()  # 0.37 .. 55 m: keeps a wild early step finite
    W, D, H = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    areas = {"floor": W * D, "ceiling": W * D, "west": D * H, "east": D * H, "south": W * H, "north": W * H}
    A = 0.0
    for s in SURFACES:
        rows = absorption[first[group(s)]: first[group(s)] + logits[s].shape[1]]
        A = A + areas[s] * (logits[s].softmax(-1) @ rows)
    S = 2 * (W * D + D * H + W * H)
    V = W * D * H
    a = (A / S).clamp(1e-4, 0.99)
    m = torch.tensor(AIR_M, dtype=a.dtype, device=a.device)
    log_rt = torch.log(0.161 * V / (-S * torch.log1p(-a) + 4 * m * V))
    speech = log_rt.mean(-1, keepdim=True)
    dist = geo[:, 3:4].clamp(-3.0, 4.0).exp().clamp_min(0.1)
    drr = 20 * torch.log10(0.057 * torch.sqrt(V / speech.exp()) / dist) / DRR_SCALE
    return torch.cat([speech, log_rt, drr], dim=1).to(aux.dtype)


def class_logits(logits: torch.Tensor, surface: str, vocabulary: str) -> torch.Tensor:
    """A surface's class log-probabilities (up to a constant) from its vocabulary's logits: the
    log-sum-exp over each class's materials."""
    if vocabulary == "class":
        return logits
    idx = torch.tensor(class_of_entry(surface, vocabulary), device=logits.device)
    n = len(surface_classes(surface))
    m = logits.amax(-1, keepdim=True)
    p = torch.zeros(logits.shape[0], n, dtype=logits.dtype, device=logits.device)
    p = p.index_add(1, idx, (logits - m).exp())
    return p.clamp_min(1e-30).log() + m


def aux_loss(aux: torch.Tensor, target: torch.Tensor, vocabulary: str = "class") -> torch.Tensor:
    """L1 on the log geometry + mean cross-entropy of the surfaces' vocabulary entries. ``target``:
    (B, 10), GEOMETRY then one entry index per surface (as floats). With materials, the
    cross-entropy of the class (the materials' summed probability) is added: a class is easier to
    see than a material, and it still teaches the head when the material is ambiguous."""
    geo, logits = split_aux(aux, vocabulary)
    loss = (geo - target[:, : len(GEOMETRY)]).abs().mean()
    ce = []
    for k, s in enumerate(SURFACES):
        t = target[:, len(GEOMETRY) + k].long()
        ce.append(F.cross_entropy(logits[s], t))
        if vocabulary != "class":
            to_class = torch.tensor(class_of_entry(s, vocabulary), device=t.device)
            ce.append(F.cross_entropy(class_logits(logits[s], s, vocabulary), to_class[t]))
    # x 2 with materials: the two cross-entropies' means add up, each weighted as the class one alone
    return loss + torch.stack(ce).mean() * (1 if vocabulary == "class" else 2)


def pooled_dense_logits(dense: torch.Tensor, vocabulary: str) -> torch.Tensor:
    """(B, n_aux) to add to the global head's reading: zero geometry, and for each surface the mean
    of its vocabulary's per-pixel log-probabilities, weighted by the probability that the pixel
    shows that surface; the weights' sum gets one pixel's worth more, so a surface the head hardly
    sees (the wall behind the camera) adds almost nothing."""
    B = dense.shape[0]
    regions = dense[:, : len(REGIONS)].float().softmax(1)
    first = table_rows(vocabulary)
    parts = [torch.zeros(B, len(GEOMETRY), device=dense.device)]
    for k, s in enumerate(SURFACES):
        n = len(vocabulary_of(s, vocabulary))
        r0 = len(REGIONS) + first[group(s)]
        logp = dense[:, r0: r0 + n].float().log_softmax(1)
        w = regions[:, k: k + 1]
        parts.append((logp * w).sum((2, 3)) / (w.sum((2, 3)) + 1.0))
    return torch.cat(parts, dim=1).to(dense.dtype)


def dense_targets(labels: torch.Tensor, size) -> torch.Tensor:
    """Region labels (B, S, S) (``rooms.surface_map``, after the picture's augmentation) at the dense
    head's resolution: the label at the centre of each cell."""
    B, S, _ = labels.shape
    h, w = size
    ii = ((torch.arange(h) + 0.5) * S / h).long().clamp_max(S - 1)
    jj = ((torch.arange(w) + 0.5) * S / w).long().clamp_max(S - 1)
    return labels[:, ii][:, :, jj].long()


def dense_loss(dense: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, vocabulary: str = "class") -> torch.Tensor:
    """Per-pixel cross-entropy of the region, plus, on each face's pixels, of that face's true
    vocabulary entry (and, with materials, its class, as ``aux_loss`` does). ``labels``: (B, h, w) at
    the dense map's resolution; ``target``: the physics head's targets (B, 10)."""
    lab = labels.long()
    loss = F.cross_entropy(dense[:, : len(REGIONS)].float(), lab)
    entries = target[:, len(GEOMETRY):].long()  # (B, 6): each face's true entry
    first = table_rows(vocabulary)
    ce = []
    for g in ("floor", "ceiling", "wall"):
        faces = torch.tensor([k for k, s in enumerate(SURFACES) if group(s) == g], device=lab.device)
        mask = torch.isin(lab, faces)
        if not mask.any():
            continue
        b, i, j = mask.nonzero(as_tuple=True)
        n = len(vocabulary_of(g, vocabulary))
        r0 = len(REGIONS) + first[g]
        logits = dense[b, r0: r0 + n, i, j].float()
        t = entries[b, lab[b, i, j]]
        ce.append(F.cross_entropy(logits, t))
        if vocabulary != "class":
            to_class = torch.tensor(class_of_entry(g, vocabulary), device=t.device)
            ce.append(F.cross_entropy(class_logits(logits, g, vocabulary), to_class[t]))
    return loss + (torch.stack(ce).mean() * (1 if vocabulary == "class" else 2) if ce else 0.0)


def decode(row) -> dict:
    """One output row -> seconds and dB."""
    v = [float(x) for x in row]
    n = len(RT60_NAMES)
    return {"rt60": math.exp(v[0]), "rt60_bands": {b: math.exp(v[1 + k]) for k, b in enumerate(BANDS)},
            "drr_db": v[n] * DRR_SCALE}


def encode(rt60_speech: float, bands: dict, drr_db: float) -> list[float]:
    """Targets in the network's units (the inverse of ``decode``)."""
    return ([math.log(rt60_speech)] + [math.log(float(bands[b] if b in bands else bands[str(b)])) for b in BANDS]
            + [drr_db / DRR_SCALE])


def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on log RT60s (mean over the six) + L1 on DRR / DRR_SCALE."""
    n = len(RT60_NAMES)
    return (pred[:, :n] - target[:, :n]).abs().mean() + (pred[:, n:] - target[:, n:]).abs().mean()
