"""mf-dd on every simulator preset, and in-situ versus ex-situ training on the noisy ones.

For each preset: mf-dd trained in situ (test accuracy, device seconds, writes per cell, epoch wall
time relative to ``ideal`` in the same run). Then the case for in-situ training: ``bp`` trained on
the ideal model and written to the chip mf-dd was trained on (ex situ), against the in-situ weights
written back to that chip, both from the chip's state at the end of training (its clock, drifted
phases and stuck devices; the state is saved once and restored for each) and evaluated at the same
device time since that write.

    python bench/presets.py                      # digits (a few minutes on 2 cores)
    python bench/presets.py --dataset fashion-mnist --epochs 5 --photonic-downsample 4

A photonic layer is a mesh of max(inputs, outputs) modes with modes^2 / 2 MZIs, so on 28x28 images
the photonic kind reads them average-pooled (``--photonic-downsample 4``: 7x7, 49 modes).
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, run_config, write_results  # noqa: E402

from devices import Device  # noqa: E402
from hil.data import Dataset, load_dataset  # noqa: E402
from hil.model import MonoForward  # noqa: E402
from hil.session import resolve_device_url  # noqa: E402

# Per simulator kind: training settings, and label -> URL query of each device studied. The first
# variant of a kind is its ideal reference (epoch time ratios, the ex-situ bp training).
KINDS: dict[str, dict[str, Any]] = {
    "crossbar": {
        "hidden": [256, 256], "train": {},
        "variants": {
            "ideal": "preset=ideal",
            "rram": "preset=rram",
            "pcm": "preset=pcm",
            "rram, 5 % stuck": "preset=rram&stuck_at_min=0.025&stuck_at_max=0.025",
            "pcm, 5 % stuck": "preset=pcm&stuck_at_min=0.025&stuck_at_max=0.025",
        },
    },
    "photonic": {
        "hidden": [64], "train": {"lr": 0.03},
        "variants": {"ideal": "preset=ideal&chunks=8", "silicon": "preset=silicon&chunks=8"},
    },
}
WAITS = {"0 s": 0.0, "1 h": 3600.0, "1 day": 86400.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--kinds", default="crossbar,photonic", help="simulator kinds to run")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photonic-downsample", type=int, default=1,
                        help="average-pool the images for the photonic kind by this factor (4: 28x28 to 7x7)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    in_situ: dict[str, dict[str, Any]] = {}
    trainers = {}
    deploy = {}
    bp_runs = {}
    rows = ["| device | mf-dd test acc. (final layer) | eps | device s | writes / cell | epoch wall time vs ideal |",
            "|---|---|---|---|---|---|"]
    deploy_rows = ["| device | " + " | ".join(f"ex situ bp, {w}" for w in WAITS) + " | "
                   + " | ".join(f"in situ mf-dd, {w}" for w in WAITS) + " |",
                   "|---|" + "---|" * (2 * len(WAITS))]
    for kind in args.kinds.split(","):
        setup = KINDS[kind]
        downsample = args.photonic_downsample if kind == "photonic" else 1
        data = load_dataset(args.dataset, args.data_dir, downsample=downsample)
        common = {"dataset": args.dataset, "data_dir": args.data_dir, "hidden": setup["hidden"],
                  "downsample": downsample, "epochs": args.epochs, "seed": args.seed, "lr_schedule": "cosine",
                  **setup["train"]}
        urls = {f"{kind} {label}": resolve_device_url(f"sim://{kind}?{query}&seed={args.seed}", data.features,
                                                      setup["hidden"])
                for label, query in setup["variants"].items()}
        for label, url in urls.items():
            run = run_config({**common, "rule": "mf-dd", "device": url}, f"mf-dd on {label}", keep_trainer=True)
            trainers[label] = run.pop("trainer")
            in_situ[label] = run
        ideal_label, ideal_url = next(iter(urls.items()))
        bp = run_config({**common, "rule": "bp", "device": ideal_url}, f"bp on {ideal_label} (ex situ)",
                      keep_trainer=True)
        bp_trainer = bp.pop("trainer")
        bp_runs[kind] = bp
        for label in list(urls)[1:]:
            chip = trainers[label].device
            deploy[label] = {
                "ex_situ_bp": deployed_final_layer(chip, bp_trainer.model.state_dict()["tensors"], data),
                "in_situ_mf_dd": deployed_cumulative(chip, trainers[label].model.state_dict()["tensors"], data),
            }
            deploy_rows.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in deploy[label]["ex_situ_bp"].values())
                               + " | " + " | ".join(f"{v:.4f}" for v in deploy[label]["in_situ_mf_dd"].values()) + " |")
        ideal_epoch = in_situ[ideal_label]["train_seconds_per_epoch"]
        for label in urls:
            s = in_situ[label]["summary"]
            counters = trainers[label].device.counters
            writes = counters.extra.get("writes_per_cell")
            rows.append(f"| {label} | {s['test_accuracy']:.4f} ({s['test_accuracy_final_layer']:.4f}) | "
                        f"{s['eps']:.3g} | {counters.device_seconds:.3g} | "
                        f"{'n/a' if writes is None else f'{writes:,.0f}'} | "
                        f"{in_situ[label]['train_seconds_per_epoch'] / ideal_epoch:.2f}x |")
    bp_text = ", ".join(f"{kind} {run['summary']['test_accuracy']:.4f}" for kind, run in bp_runs.items())
    if args.photonic_downsample > 1:
        bp_text += f"; the photonic kind reads the images average-pooled {args.photonic_downsample}x"
    table = (f"{args.dataset}, {args.epochs} epochs, seed {args.seed}; bp on the ideal devices reached {bp_text}.\n\n"
             + "\n".join(rows) + "\n\n" + "\n".join(deploy_rows) + "\n")
    payload = {"environment": environment(), "in_situ": in_situ, "bp_ideal": bp_runs, "deployed": deploy}
    write_results(args.out, f"presets_{args.dataset}", payload, table)
    print(table)


def deployed_final_layer(chip: Device, tensors: list[torch.Tensor], data: Dataset) -> dict[str, float]:
    return _deployed(chip, tensors, data, use_cumulative=False)


def deployed_cumulative(chip: Device, tensors: list[torch.Tensor], data: Dataset) -> dict[str, float]:
    return _deployed(chip, tensors, data, use_cumulative=True)


def _deployed(device: Device, tensors: list[torch.Tensor], data: Dataset, use_cumulative: bool) -> dict[str, float]:
    """Write weights to the trained chip as it was left; test accuracy after each wait since the write.

    The chip's state is restored afterwards, so every deployment starts from the same moment.
    """
    saved = device.state_dict()
    model = MonoForward.initialise(device.info(), data.classes, seed=0)
    model.load_state_dict({"tensors": tensors})
    params = model.device_params()
    out = {}
    elapsed = 0.0
    for label, wait in WAITS.items():
        device.wait(wait - elapsed)  # type: ignore[attr-defined]
        elapsed = wait
        correct = 0
        with torch.no_grad():
            for start in range(0, len(data.x_test), 1000):
                final, cumulative = model.predict(device.forward(params, data.x_test[start:start + 1000]))
                guess = cumulative if use_cumulative else final
                correct += int((guess == data.y_test[start:start + 1000]).sum())
        out[label] = correct / len(data.x_test)
    device.load_state_dict(saved)  # type: ignore[arg-type]
    return out


if __name__ == "__main__":
    main()
