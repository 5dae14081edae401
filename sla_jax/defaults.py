"""The base experiment configuration (paper §3.1); the files in ``configs/`` start from it."""

from __future__ import annotations

import io
import re
import tokenize

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """CPS-SLA on 256 px images: SGD 0.03, momentum 0.9, wd 3e-5, batch 64, 256 epochs × 256 steps."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # folder holding CATEGORY/ in data.layout (MVTec AD itself, or your own)
    c.data.layout = "mvtec"  # mvtec (train/good, test/TYPE, ground_truth/TYPE) | folders (good/, TYPE/, masks/)
    c.data.test_fraction = 0.2  # layout folders: share of the good images held out for testing (by file name)
    c.data.category = ""  # sub-folder of root, e.g. "bottle"
    c.data.demo = False  # generate the embedded demo dataset into WORKDIR/demo_data and use it
    c.data.image_size = 256
    c.data.resize = "bilinear"  # PIL's antialiased filter to data.image_size: bilinear | bicubic (the PyTorch ports)
    c.data.require_masks = True  # False: image-level only, defect types may lack ground_truth/
    c.data.skip_bad_files = False  # True: unreadable/mismatched files are left out (listed in results.json)
    c.data.cache_dir = ""  # prepared TFDS records; "" = ~/.cache/sla_jax/tfds

    c.transform = ml_collections.ConfigDict()
    c.transform.name = "cps"  # co | cp | cps | cpf (3-way CutPaste-Fusion)
    c.transform.pairing = "bernoulli"  # bernoulli (eq. 2, b ~ Bernoulli(0.5)) | paired
    c.transform.cutout_fill = "random"  # random | zero
    c.transform.scar_size = "relative"  # relative (scales with data.image_size / 256) | pixels (the PyTorch ports)
    c.transform.global_jitter = 0.1  # colour jitter of the whole image before the edit (CutPaste); 0: none
    c.transform.jitter_order = "random"  # colour-jitter operations in random order (torchvision) | fixed

    c.labels = ml_collections.ConfigDict()
    c.labels.mode = "soft"  # soft (SLA) | hard (the "w/o SLA" ablation) | smooth (SLA with tau)
    c.labels.alpha = 10.0
    c.labels.epsilon = 0.02
    c.labels.tau = 0.005  # mode "smooth": sigmoid((Δ − ε)/τ) replaces 1{Δ > ε} (differentiable labels)
    c.labels.learn = ()  # ("alpha",), ("alpha", "epsilon"): train these jointly with the network

    c.model = ml_collections.ConfigDict()
    c.model.head = (512, 512, 512, 512, 512, 512, 512, 512, 128)  # CutPaste's projection head
    c.model.stem = "imagenet"  # imagenet (7×7/2 + max-pool) | small (3×3/1, no pool)
    c.model.conv_impl = "auto"  # auto | xla | im2col
    c.model.dtype = "float32"  # compute dtype of the backbone: float32 | bfloat16 (parameters stay float32)
    c.model.init = ""  # "" = random init; else a backbone from python -m sla_jax.convert_weights (.npz/.safetensors)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64  # network inputs per step (paired: half of them are sources)
    c.train.steps = 256 * 256  # 256 epochs of 256 steps (CutPaste's epoch)
    c.train.learning_rate = 0.03
    c.train.momentum = 0.9
    c.train.weight_decay = 3e-5  # l2
    c.train.weight_decay_on = "weights"  # weights: kernels only, not BatchNorm or biases | all (torch's SGD, the ports)
    c.train.checkpoint_every = 1024
    c.train.log_every = 64
    c.train.keep_checkpoints = 2
    c.train.steps_per_call = 1  # steps per dispatch (one compiled lax.scan): > 1 cuts the host's share of a step
    c.train.ensemble_strategy = "auto"  # an ensemble's members: vmap (batched) | map (one after another) | auto
    c.train.tensorboard = True  # write TensorBoard event files into WORKDIR/tensorboard (scalars, figures, hparams)
    c.train.freeze_steps = 20  # with model.init: backbone frozen for the first N steps (CutPaste); else ignored

    c.localization = ml_collections.ConfigDict()
    c.localization.patch_size = 0  # > 0: patch-level model and defect maps (paper: 32); 0: image level only
    c.localization.stride = 4  # test patches every `stride` pixels (paper: 4)
    c.localization.train_stride = 4  # training patches for the GDE every `train_stride` pixels
    c.localization.sigma = 10.0  # RFU Gaussian (FCDD's value for a 32 px field)
    c.localization.normalize = False  # RFU: divide by the summed kernel weights (weighted mean of overlaps)
    c.localization.gde = "shared"  # shared (one GDE on all patches) | per_position (aligned objects)
    c.localization.batch_size = 1024  # patches per forward pass (bounds memory)
    c.localization.heatmaps = 16  # test images drawn in heatmaps.png

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 64
    c.eval.l2_normalize = True  # GDE on L2-normalised pooled features
    c.eval.density = "gde"  # gde (Gaussian, squared Mahalanobis) | kde (Gaussian kernels, DROC's bandwidth)
    c.eval.threshold_quantile = 0.99  # decision threshold: this quantile of out-of-fold training-image scores
    c.eval.threshold_folds = 5  # folds for those out-of-fold scores
    c.eval.threshold_images = 32  # patch models: training images scored for the threshold (maps are costly)
    return c


def key_comments() -> dict[str, str]:
    """``{"train.steps": "256 epochs of 256 steps (CutPaste's epoch)", ...}``: the comment beside each key in
    :func:`base_config`, read from this file's source (the one place the defaults are written)."""
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    comments, key = {}, None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NEWLINE or token.type == tokenize.NL:
            key = None
        line = re.match(r"\s*c\.([\w.]+)\s*=", token.line)
        if line:
            key = line.group(1)
        if token.type == tokenize.COMMENT and key:
            comments[key] = token.string.lstrip("# ").strip()
    return comments
