"""Stage 1 of scene-gen: the image encoder f_V, self-supervised (SimCLR) on the scene images.

    python -m soundsight_train.scene_image_encoder [--data DIR] [--size 64] [--steps 2000] [--batch 128] \
        [--out models/scene-image-encoder-64] [--resume] [--threads 2] [--max-minutes 40]
    torchrun --nproc_per_node 4 -m soundsight_train.scene_image_encoder --preset paper ...   # DDP
    python -m soundsight_train.scene_image_encoder --tiny --data DIR --out /tmp/fv   # smoke run (< 1 min)

No labels are used for training. Two augmented views of each image (random resized crop with a
mild scale range, 0.6–1 of the area by default, so that object size — which encodes loudness in
this dataset — survives as a feature; horizontal flip; colour jitter; greyscale) go through
f_V and a projection head; NT-Xent loss (temperature 0.2) over the 2B views of a process
(negatives are not gathered across DDP processes). AdamW, linear warm-up + cosine decay.

Background augmentation (``--bg-swap P``, after Ryali et al. 2021, "Characterizing and improving
the robustness of self-supervised learning through background augmentations"): with
probability P a view's background is replaced by a random crop of another background photo,
using the object mask recovered from the composite (``scenes.object_masks``). Without it the
17 background photos are the easiest thing to tell images apart by, and a 12-min SimCLR run
learned background identity only (kNN class accuracy at chance, 0.034 vs 0.032). Still no
labels: the mask says where the pasted pixels are, not what they show.

``--objective object-ae`` replaces the two views by an object autoencoder: f_V's feature of the
scene (its background swapped as above, ramped in) goes through a small training-only decoder
that must draw the pasted object(s) over flat grey and their mask (weighted MSE + 0.1 BCE). The
target never shows a background, so the feature spends itself on the objects' appearance,
position and size — the three things the generator has to draw and the sound can tell (class
and, through loudness, size). No zoomed views there: they would teach it to forget size. Still
no labels: the mask comes from the stored background crop.

Evaluation (labels only here): weighted kNN top-1 accuracy of the loudest object's class on
val with train features (``knn_top1``; ``knn_any_label``: the prediction is any object of the
sample), the same kNN on raw 16x16 pixels as a reference, and a ridge "size probe": R^2 of
log(gain) of the loudest object (the object's size is monotonic in it) from the features.
Written to ``<run>/curve.jsonl`` every ``--eval-every`` steps and into the card at the end.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from soundsight_plugins.scene_gen.encoders import (
    IMAGE_ARCHITECTURE,
    IMAGE_TASK,
    ImageEncoder,
    ImageEncoderConfig,
    ProjectionHead,
    count_parameters,
)
from soundsight_plugins.scene_gen.losses import nt_xent
from soundsight_train import scene_common as sc
from soundsight_train.scene_loop import TrainLoop, epoch_line, lr_epoch_fields


class ObjectDecoder(nn.Module):
    """Training-only decoder of ``--objective object-ae``: a unit-norm feature → the scene's pasted
    object(s) over flat grey (RGB) and their mask (a logit), at the encoder's input size."""

    def __init__(self, dim: int, size: int, widths=(128, 64, 32, 16)):
        super().__init__()
        self.start = max(size // 2 ** len(widths), 1)
        self.fc = nn.Linear(dim, widths[0] * self.start ** 2)
        layers = []
        for cin, cout in zip(widths, widths[1:] + (widths[-1],)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[-1], 4, 3, 1, 1)
        self.size, self.w0 = size, widths[0]

    def forward(self, f):
        x = self.fc(F.normalize(f, dim=1) * f.shape[1] ** 0.5).view(len(f), self.w0, self.start, self.start)
        y = self.out(self.body(x))
        if y.shape[-1] != self.size:
            y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return y


class ObjectAE(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.encoder = ImageEncoder(cfg)
        self.decoder = ObjectDecoder(cfg.feature_dim, cfg.image_size)

    def forward(self, x):
        return self.decoder(self.encoder(x))


OBJECT_WEIGHT = 4.0  # extra weight of object pixels in the object-ae loss


def object_ae_loss(pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, object_weight: float = OBJECT_WEIGHT):
    """Mean squared error to the object(s) over grey — object pixels weighted ``1 + object_weight``
    because they are a small part of most images — plus the mask's binary cross-entropy."""
    target = x * mask + 0.5 * (1 - mask)
    w = 1 + object_weight * mask
    mse = ((pred[:, :3].sigmoid() - target) ** 2 * w).sum() / (w.sum() * 3)
    bce = F.binary_cross_entropy_with_logits(pred[:, 3:], mask)
    return mse + 0.1 * bce, mse, bce


class SimCLR(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.encoder = ImageEncoder(cfg)
        self.head = ProjectionHead(cfg.feature_dim, cfg.proj_dim)

    def forward(self, x):
        return self.head(self.encoder(x))


def swap_background(x, masks_u8, bank_u8, p: float, gen: torch.Generator, device) -> torch.Tensor:
    """Per sample with probability ``p``: object pixels of ``x`` over a random background crop."""
    b = len(x)
    swap = (torch.rand(b, 1, 1, 1, generator=gen) < p).to(device, x.dtype)
    bg = sc.to_unit(bank_u8[torch.randint(len(bank_u8), (b,), generator=gen)], device)
    keep = 1 - (1 - masks_u8.to(device, x.dtype)) * swap  # 1 on objects and on every pixel of unswapped samples
    return x * keep + bg * (1 - keep)


def mask_boxes(masks_u8: torch.Tensor) -> torch.Tensor:
    """(N, 4) normalised [-1, 1] boxes (x0, y0, x1, y1) around each mask's pixels (the whole image if empty)."""
    n, _, h, w = masks_u8.shape
    m = masks_u8[:, 0].bool()
    cols, rows = m.any(1), m.any(2)
    idx_w, idx_h = torch.arange(w).expand(n, w), torch.arange(h).expand(n, h)
    x0 = torch.where(cols, idx_w, w).min(1).values
    x1 = torch.where(cols, idx_w, -1).max(1).values + 1
    y0 = torch.where(rows, idx_h, h).min(1).values
    y1 = torch.where(rows, idx_h, -1).max(1).values + 1
    empty = ~cols.any(1)
    box = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], 1).float() * 2 - 1
    box[empty] = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    return box


def object_crop(x: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator, margin=(1.2, 2.2)) -> torch.Tensor:
    """A square view around each image's object(s): the box's longer side times U(``margin``),
    jittered, resized to the input size, random flip (one grid_sample for the batch)."""
    b = len(x)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
    half = (side * torch.empty(b).uniform_(*margin, generator=gen)).clamp(0.15, 1.0)
    cx = cx + (torch.rand(b, generator=gen) - 0.5) * 0.3 * half
    cy = cy + (torch.rand(b, generator=gen) - 0.5) * 0.3 * half
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = half * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = half, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def parse(argv=None):
    ap = sc.make_parser("scene_image_encoder", __doc__, "scene-image-encoder-64")
    ap.add_argument("--size", type=int, choices=[32, 64, 128], default=64)
    ap.add_argument("--preset", choices=["cpu", "paper", "tiny"], default="cpu")
    ap.add_argument("--feature-dim", type=int, default=None, help="D (default: the preset's, 256 on cpu)")
    ap.add_argument("--objective", choices=["simclr", "object-ae"], default="simclr",
                    help="simclr: two views, NT-Xent; object-ae: reconstruct the pasted object(s) and their mask")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128, help="images per step per process (2 views each)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--crop-min", type=float, default=0.6, help="smallest crop area fraction")
    ap.add_argument("--jitter", type=float, default=0.4, help="colour jitter strength")
    ap.add_argument("--bg-swap", type=float, default=0.5, help="probability of replacing a view's background")
    ap.add_argument("--local-view", type=float, default=1.0,
                    help="probability that a view is a crop around the object(s) instead of the whole image")
    ap.add_argument("--aug-ramp", type=int, default=300,
                    help="steps over which --bg-swap and --local-view ramp up from 0 (0: full from the start)")
    ap.add_argument("--bg-bank", type=int, default=3000, help="random background crops to swap in")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-train", type=int, default=2000, help="train images that vote in kNN")
    return sc.parse_with_tiny(ap, argv, dict(preset="tiny", size=32, steps=3, batch=8, warmup=1, eval_every=2,
                                             eval_train=64, log_every=1))


@torch.no_grad()
def evaluate(encoder, train, val, train_u8, val_u8, dev, n_train: int) -> dict:
    n_train = min(n_train, len(train_u8))
    ft = sc.encode_images(encoder, train_u8[:n_train], dev.torch_device)
    fv = sc.encode_images(encoder, val_u8, dev.torch_device)
    yt = torch.from_numpy(train.labels[:n_train, 0].astype("int64"))
    yv = torch.from_numpy(val.labels[:, 0].astype("int64"))
    extra = torch.from_numpy(val.labels.astype("int64"))
    n_classes = len(train.classes)
    m = sc.knn_accuracy(ft, yt, fv, yv, k=20, n_classes=n_classes, extra_y=extra)
    pix_t = F.interpolate(train_u8[:n_train].float(), size=16, mode="area").flatten(1)
    pix_v = F.interpolate(val_u8.float(), size=16, mode="area").flatten(1)
    base = sc.knn_accuracy(pix_t - pix_t.mean(1, keepdim=True), yt, pix_v - pix_v.mean(1, keepdim=True), yv, k=20,
                           n_classes=n_classes)
    gt = torch.log(torch.from_numpy(train.gains[:n_train, 0].astype("float64")))
    gv = torch.log(torch.from_numpy(val.gains[:, 0].astype("float64")))
    m.update({"pixels_knn_top1": base["knn_top1"], "size_probe_r2": sc.ridge_r2(ft, gt, fv, gv),
              "pixels_size_probe_r2": sc.ridge_r2(pix_t / 255, gt, pix_v / 255, gv, lam=1.0),
              "chance_top1": round(float(torch.bincount(yv, minlength=n_classes).max()) / len(yv), 4),
              "val_images": len(val_u8), "train_images": n_train})
    return m


def write_registry(out, encoder, cfg, args, state, metrics, data):
    method = ("SimCLR (NT-Xent) on two augmented views, no labels" if args.objective == "simclr" else
              "object autoencoder: the feature decodes the pasted object(s) over grey and their mask "
              "(masks from the composites' stored background crops), no labels")
    training = {"command": state["command"], "method": method, "objective": args.objective,
                "steps": state["step"], "batch": args.batch, "world_size": state["world"],
                "images_seen": state["step"] * args.batch * state["world"], "seconds": round(state["elapsed"], 1),
                "device": state["device"], "optimizer": {"type": "AdamW", "lr": args.lr, "weight_decay": args.wd,
                                                         "schedule": f"warm-up {args.warmup} + cosine"},
                "curve": "curve.jsonl in the run folder"}
    if args.objective == "simclr":
        training.update(temperature=args.temperature,
                        augment={"crop_area": [args.crop_min, 1.0], "flip": True, "background_swap": args.bg_swap,
                                 "local_view": args.local_view, "ramp_steps": args.aug_ramp,
                                 "colour_jitter": args.jitter, "greyscale": 0.2})
    else:  # the input's only augmentations; the decoder is not shipped
        training.update(augment={"flip": True, "background_swap": args.bg_swap, "ramp_steps": args.aug_ramp},
                        loss=f"MSE to the object(s) over grey (object pixels weight {1 + OBJECT_WEIGHT:g}) + 0.1 x mask BCE")
    sc.save_registry(out, args, encoder, cfg, task=IMAGE_TASK, architecture=IMAGE_ARCHITECTURE, training=training,
                     metrics=metrics, data=data,
                     description=f"scene-gen image encoder f_V: ResNet-style, {cfg.image_size} px -> "
                                 f"{cfg.feature_dim}-d features (unit-normalised by consumers); self-supervised "
                                 f"({args.objective}) on the scenes dataset.")


def main(argv=None) -> int:
    args = parse(argv)
    rank, world, dev, main_proc, out, run, log, command = sc.start(args, "scene_image_encoder", argv)
    from soundsight_train import scenes

    folder, (train, val) = sc.scene_splits(args.data, "train", "val")
    train_u8, val_u8 = sc.images_nchw(train, args.size), sc.images_nchw(val, args.size)
    if args.objective == "object-ae":
        args.local_view = 0.0  # a zoomed view would teach the features to forget the object's size
    needs_masks = args.bg_swap > 0 or args.local_view > 0 or args.objective == "object-ae"
    if needs_masks and not all("path" in b for b in train.meta["backgrounds"]):
        if args.objective == "object-ae":
            raise SystemExit("error: --objective object-ae needs the object masks, and this dataset's meta.json "
                             "has no background photo paths; rebuild it with `python -m soundsight_train.scenes build`")
        log("note: the dataset's meta.json has no background photo paths; --bg-swap and --local-view disabled")
        args.bg_swap = args.local_view = 0.0
        needs_masks = False
    masks = torch.from_numpy(scenes.object_masks(train, args.size)).unsqueeze(1) if needs_masks else None
    boxes = mask_boxes(masks) if masks is not None and args.local_view > 0 else None
    bank = (torch.from_numpy(scenes.background_bank(folder, args.bg_bank, args.size, args.seed)).permute(0, 3, 1, 2)
            .contiguous() if args.bg_swap > 0 else None)
    overrides = {"feature_dim": args.feature_dim} if args.feature_dim else {}
    cfg = ImageEncoderConfig.for_size(args.size, args.preset, **overrides)

    torch.manual_seed(args.seed)
    model = (SimCLR(cfg) if args.objective == "simclr" else ObjectAE(cfg)).to(dev.torch_device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    scaler = sc.make_scaler(dev)
    modules, optims = {"model": model}, {"opt": opt, "scaler": scaler}
    state = sc.initial_state({"step": 0, "elapsed": 0.0}, command, world, dev, cfg, args)
    sc.restore(sc.resume_state(args, run, cfg.to_dict(), log), modules, optims, dev, state)
    ddp = sc.wrap_ddp(model, dev, world)
    gen = sc.batch_generator(args.seed, rank, state["step"])

    log(f"data: {folder} ({len(train_u8)} train / {len(val_u8)} val images at {args.size} px)")
    head = model.head if args.objective == "simclr" else model.decoder
    log(f"model: f_V {count_parameters(model.encoder) / 1e6:.2f}M params (D={cfg.feature_dim}), {args.objective} "
        f"{type(head).__name__} {count_parameters(head) / 1e6:.2f}M; device {dev}; world {world}; batch {args.batch}/process")
    log(f"run folder: {run}; registry folder: {out}")

    loop = TrainLoop(args, run, state, modules, optims, main_proc, log,
                     lr_epoch_fields(opt, args.batch * world, len(train_u8)), epoch_line)

    def object_ae_step(step):
        sc.set_lr(opt, sc.lr_at(step, args.steps, args.lr, args.warmup))
        idx = sc.take(len(train_u8), args.batch, gen)
        x = sc.to_unit(train_u8[idx], dev.torch_device)
        m = masks[idx].to(dev.torch_device, x.dtype)
        flip = torch.rand(len(x), generator=gen) < 0.5
        x[flip], m[flip] = x[flip].flip(-1), m[flip].flip(-1)
        # the input's background is swapped (ramped in), the target never has one: only the
        # object's appearance, position and size are worth encoding
        ramp = min(1.0, step / args.aug_ramp) if args.aug_ramp > 0 else 1.0
        v = swap_background(x, m, bank, args.bg_swap * ramp, gen, dev.torch_device) if bank is not None else x
        with dev.autocast():
            pred = ddp(v)
        loss, mse, bce = object_ae_loss(pred.float(), x, m)
        sc.backward_step(loss, opt, scaler)
        return {"loss": loss.detach(), "mse": mse.detach(), "bce": bce.detach()}

    def train_step(step):
        sc.set_lr(opt, sc.lr_at(step, args.steps, args.lr, args.warmup))
        idx = sc.take(len(train_u8), args.batch, gen)
        x = sc.to_unit(train_u8[idx], dev.torch_device)
        views = []
        # curriculum: plain views first (they learn fast, mostly from the background), then the
        # augmentations that take the background away; at full strength from the start SimCLR
        # collapsed to a constant embedding (loss ln(2B-1)) in three runs
        ramp = min(1.0, step / args.aug_ramp) if args.aug_ramp > 0 else 1.0
        p_swap, p_local = args.bg_swap * ramp, args.local_view * ramp
        for _ in range(2):
            v = swap_background(x, masks[idx], bank, p_swap, gen, dev.torch_device) if masks is not None else x
            v = sc.random_resized_crop(v, gen, scale=(args.crop_min, 1.0))
            if boxes is not None and args.local_view > 0:
                local = torch.rand(len(x), generator=gen) < p_local
                if local.any():
                    v[local] = object_crop(x[local] if masks is None else
                                           swap_background(x[local], masks[idx][local], bank, p_swap, gen,
                                                           dev.torch_device), boxes[idx][local], gen)
            views.append(sc.colour_jitter(v, gen, args.jitter))
        with dev.autocast():
            z = ddp(torch.cat(views, 0))
            loss = nt_xent(z[:len(x)], z[len(x):], args.temperature)
        sc.backward_step(loss, opt, scaler)
        return {"loss": loss.detach()}

    def evaluate_now(step):
        m = evaluate(model.encoder, train, val, train_u8, val_u8, dev, args.eval_train)  # modes restored
        return m, (f"eval: kNN top-1 {m['knn_top1']} (pixels {m['pixels_knn_top1']}, chance {m['chance_top1']}); "
                   f"size probe R2 {m['size_probe_r2']}")

    model.train()
    step = loop.run(state["step"], args.steps, train_step if args.objective == "simclr" else object_ae_step,
                    evaluate_now)
    if step is None:
        return 1

    if main_proc:
        log("final evaluation ...")
        m = evaluate(model.encoder, train, val, train_u8, val_u8, dev, len(train_u8) if not args.tiny else 64)
        loop.curve.write({"step": step, "val_final": m})
        write_registry(out, model.encoder, cfg, args, state, {"val": m}, scenes.data_card(folder))
        log(f"val: kNN top-1 {m['knn_top1']} (any label {m['knn_any_label']}; raw pixels {m['pixels_knn_top1']}; "
            f"chance {m['chance_top1']}); size probe R2 {m['size_probe_r2']} (pixels {m['pixels_size_probe_r2']})")
        log(f"wrote registry model {out}")
    loop.close()
    sc.cleanup_distributed(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
