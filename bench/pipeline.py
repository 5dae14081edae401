"""Whole pretext-training pipeline, sla_jax against a PyTorch CutPaste pipeline, side by side in one run.

Both train ResNet-18 + CutPaste's head on CutPaste (binary, as the PyTorch ports do) from the same
decoded training images, 32 sources per step, each seen original and edited (64 network images):

- sla_jax: ``sla_jax.train``'s jitted step as shipped: draw the batch from the images on the device,
  CutPaste, soft labels, normalisation and the SGD update in one program (``transform.pairing=paired``);
- PyTorch: a ``DataLoader`` whose workers apply CutPaste per image with PIL (crop, colour jitter,
  paste), normalise and collate (``bench/torch_reference.py``), then the same network and optimizer
  in ``channels_last``.

Each side runs in its own process: the decoding of the images (once, before training), then steady
network images/s over the timed steps after warm-up, and peak RSS (PyTorch: main process and its
DataLoader workers). Prints a table, writes JSON.

    python bench/pipeline.py [--data ROOT/CATEGORY] [--size 128] [--sources 32] [--steps 8]
        [--workers 2] [--out bench/pipeline.json]

Without ``--data`` the embedded demo dataset (weave) is generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402


def load_images(data: str, *, size: int):
    """(uint8 N×S×S×3 training images, seconds) through sla_jax's loader (decoded and resized once)."""
    from sla_jax import data as data_lib

    root, category = os.path.split(os.path.abspath(data))
    start = time.perf_counter()
    split = data_lib.load_split(root, category=category, split="train", image_size=size, require_masks=False)
    return split.images, time.perf_counter() - start


def worker_jax(data: str, size: int, sources: int, steps: int) -> dict:
    from functools import partial

    import jax

    from sla_jax.training import pretext
    from sla_jax.training.models import PretextNet
    from sla_jax.training.state import data_mesh, init_state

    images, load_s = load_images(data, size=size)
    model = PretextNet(num_classes=2, head=common.PAPER_HEAD)
    optimizer = common.sla_jax_optimizer()
    spec = pretext.StepSpec(batch_size=2 * sources, transform="cp", pairing="paired")
    mesh = data_mesh()
    state = jax.jit(partial(init_state, model=model, optimizer=optimizer, image_size=size))(jax.random.key(0))
    step = pretext.compile_train_step(model=model, optimizer=optimizer, spec=spec, mesh=mesh)
    device_images = jax.device_put(images)
    key = jax.random.key(1)
    holder = {"state": state}

    def once():
        holder["state"], metrics = step(holder["state"], device_images, key, pretext.HParams.create())
        metrics["loss"].block_until_ready()

    seconds, times = common.median_seconds(once, repeats=steps, warmup=3)
    return {
        "seconds_per_step": seconds,
        "times": times,
        "load_seconds": load_s,
        "n_images": len(images),
        "peak_rss_gb": common.peak_rss_gb(),
        "workers_peak_rss_gb": None,
    }


def worker_torch(data: str, size: int, sources: int, steps: int, workers: int) -> dict:
    import torch
    from PIL import Image

    from bench import torch_reference

    images, load_s = load_images(data, size=size)
    pil = [Image.fromarray(image) for image in images]
    torch.manual_seed(0)
    model = torch_reference.PretextNet(head=common.PAPER_HEAD).to(memory_format=torch.channels_last).train()
    optimizer = torch_reference.make_optimizer(model)
    dataset = torch_reference.CutPasteDataset(pil, length=sources * (steps + 4))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=sources, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0
    )
    labels = torch.cat([torch.zeros(sources, dtype=torch.long), torch.ones(sources, dtype=torch.long)])
    targets = torch.nn.functional.one_hot(labels, 2).float()
    batches = iter(loader)

    def once():
        originals, edited = next(batches)
        inputs = torch.cat([originals, edited]).contiguous(memory_format=torch.channels_last)
        torch_reference.train_step(model, optimizer, inputs, targets)

    seconds, times = common.median_seconds(once, repeats=steps, warmup=3)
    batches._shutdown_workers()  # RUSAGE_CHILDREN counts the workers once they have exited
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {
        "seconds_per_step": seconds,
        "times": times,
        "load_seconds": load_s,
        "n_images": len(images),
        "peak_rss_gb": common.peak_rss_gb(),
        "workers_peak_rss_gb": children,
        "workers": workers,
        "threads": torch.get_num_threads(),
    }


def worker_pil(data: str, size: int, sources: int, steps: int, workers: int) -> dict:
    """The PyTorch pipeline's loading alone (DataLoader with CutPaste, no training)."""
    import torch
    from PIL import Image

    from bench import torch_reference

    images, _ = load_images(data, size=size)
    dataset = torch_reference.CutPasteDataset([Image.fromarray(i) for i in images], length=sources * (4 * steps + 8))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=sources, num_workers=workers, persistent_workers=workers > 0
    )
    batches = iter(loader)
    seconds, times = common.median_seconds(lambda: next(batches), repeats=4 * steps, warmup=4)
    return {"seconds_per_step": seconds, "times": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="ROOT/CATEGORY in MVTec AD layout (default: the demo weave)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sources", type=int, default=32, help="source images per step (network batch: twice)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="PyTorch DataLoader workers")
    parser.add_argument("--out", default=os.path.join(common.REPO, "bench", "pipeline.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, data, *numbers = args.worker
        numbers = list(map(int, numbers))
        result = {"jax": worker_jax, "torch": worker_torch, "pil": worker_pil}[kind](data, *numbers)
        common.emit(result)
        return
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if not data:
            from sla_jax.data import synthetic

            data = os.path.join(
                synthetic.write_demo_dataset(os.path.join(scratch, "demo"), categories=("weave",)), "weave"
            )
        common_args = [data, args.size, args.sources, args.steps]
        measured = {}
        for name, extra in (
            ("sla_jax", ["jax", *common_args]),
            ("pytorch", ["torch", *common_args, args.workers]),
            ("pytorch loading only", ["pil", *common_args, args.workers]),
        ):
            print(f"{name} ...", flush=True)
            measured[name] = common.run_worker(__file__, extra)
    per_step = 2 * args.sources
    reference = measured["pytorch"]["seconds_per_step"]
    rows = [
        {
            "pipeline": name,
            "seconds_per_step": m["seconds_per_step"],
            "images_per_s": per_step / m["seconds_per_step"],
            "vs_torch": reference / m["seconds_per_step"],
            "load_seconds": m.get("load_seconds"),
            "peak_rss_gb": m.get("peak_rss_gb"),
            "workers_peak_rss_gb": m.get("workers_peak_rss_gb"),
            "times": m["times"],
        }
        for name, m in measured.items()
    ]
    print(
        f"{args.size} px, {args.sources} sources + {args.sources} CutPaste per step, "
        f"{measured['sla_jax']['n_images']} training images from {data}"
    )
    print(
        common.table(
            rows,
            [
                ("pipeline", "pipeline", ""),
                ("seconds_per_step", "s/step", ".3f"),
                ("images_per_s", "network images/s", ".1f"),
                ("vs_torch", "× PyTorch", ".2f"),
                ("load_seconds", "decode s", ".1f"),
                ("peak_rss_gb", "peak RSS GB", ".2f"),
                ("workers_peak_rss_gb", "workers RSS GB", ".2f"),
            ],
        )
    )
    common.write_json(
        args.out,
        {
            "rows": rows,
            "size": args.size,
            "sources": args.sources,
            "steps": args.steps,
            "workers": args.workers,
            "data": data,
            "machine": common.machine(),
            "command": " ".join(sys.argv),
        },
    )


if __name__ == "__main__":
    main()
