"""keras-preact against timm itself: files written by timm, outputs computed by timm.

Not part of `make test` (timm and torch are peers, not dependencies); run by
hand where a venv has timm (timm imports torchvision, which can be stubbed
for model creation):

    TIMM_PYTHON write DIR [MODEL ...]   # in the timm venv: a random-init timm model with
                                        # random BN statistics, saved as DIR/MODEL.safetensors
                                        # by safetensors.torch, and timm's outputs in DIR/MODEL.npz
    .venv/bin/python tests/timm_parity.py check DIR [MODEL ...]

`write` stores, for 2 random 64x64 images, what timm computes from that file
(`create_model(..., pretrained=True, pretrained_cfg_overlay={"file": ...})`):
the logits, `features_only=True` taps at `output_stride` 32, 16 and 8, and
the logits with `in_chans=1` and 4 (timm adapts the stem: `adapt_input_conv`). `check` loads each file with
`ImageNetResNetV2(depth, weights=file, ...)` and prints the largest relative
difference of every output.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np

MODELS = (
    "resnetv2_18",
    "resnetv2_50",
    "resnetv2_50x1_bit",
    "resnetv2_18d",
    "resnetv2_50d_gn",
    "resnetv2_50d_evos",
)
STRIDES = (32, 16, 8)
CHANNELS = (1, 4)


def _timm_outputs(name, path, images):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) or hasattr(
                module, "v"
            ):  # BN, GroupNorm and EvoNorm: random affine parameters (and EvoNorm's v)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                if getattr(module, "v", None) is not None:
                    module.v.uniform_(0.5, 1.5)
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    out = {"images": images}

    def from_file(**kwargs):  # timm's own loading of the file: in_chans adapts the stem
        overlay = {"file": path, "num_classes": 1000}
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        ).eval()

    with torch.no_grad():
        out["logits"] = from_file()(x).numpy()
        for stride in STRIDES:
            taps = from_file(features_only=True, output_stride=stride)(x)
            for level, tap in enumerate(taps, 1):
                out[f"os{stride}_P{level}"] = tap.numpy().transpose(0, 2, 3, 1)
        for channels in CHANNELS:
            gray = x[:, :1].repeat(1, channels, 1, 1)
            out[f"in{channels}_logits"] = from_file(in_chans=channels)(gray).numpy()
    return out


def write(folder, models):
    os.makedirs(folder, exist_ok=True)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    for name in models:
        out = _timm_outputs(name, os.path.join(folder, f"{name}.safetensors"), images)
        np.savez(os.path.join(folder, f"{name}.npz"), **out)
        print(f"wrote {name}: {len(out)} arrays")


def _difference(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def check(folder, models):
    import keras

    import keras_preact as kp

    worst = 0.0
    for name in models:
        depth = int(re.match(r"resnetv2_(\d+)", name).group(1))
        path = os.path.join(folder, f"{name}.safetensors")
        want = dict(np.load(os.path.join(folder, f"{name}.npz")))
        images = want["images"]  # already in [-1, 1]: the models run without preprocessing
        rows = []
        for stride in STRIDES:
            model = kp.ImageNetResNetV2(
                depth,
                weights=path,
                output_stride=stride,
                include_preprocessing=False,
                classifier_activation=None,
            )
            logits, taps = keras.Model(model.inputs, [model.output, model.pyramid_outputs])(images)
            if stride == 32:
                rows.append(("logits", _difference(logits, want["logits"])))
            for level, tap in taps.items():
                rows.append((f"os{stride} {level}", _difference(tap, want[f"os{stride}_{level}"])))
        for channels in CHANNELS:
            model = kp.ImageNetResNetV2(
                depth,
                weights=path,
                input_shape=(None, None, channels),
                include_preprocessing=False,
                classifier_activation=None,
            )
            gray = np.repeat(images[..., :1], channels, axis=-1)
            rows.append(
                (
                    f"in_chans={channels} logits",
                    _difference(model(gray), want[f"in{channels}_logits"]),
                )
            )
        for label, diff in rows:
            print(f"{name} {label}: max relative difference {diff:.2e}")
        worst = max([worst] + [d for _, d in rows])
    print(f"worst: {worst:.2e} ({'within' if worst <= 1e-4 else 'OVER'} 1e-4)")
    return worst <= 1e-4


if __name__ == "__main__":
    command, folder, *names = sys.argv[1:]
    names = names or list(MODELS)
    if command == "write":
        write(folder, names)
    else:
        sys.exit(0 if check(folder, names) else 1)
