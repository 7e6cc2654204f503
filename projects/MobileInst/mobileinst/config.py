# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Config keys of MobileInst.

Every value that the paper does not give (see MOBILEINST.md, "DEFAULT") has a
key here so that it can be changed from YAML or the command line. Each default
is the paper's form: a value the paper gives, else the DEFAULT borrowed from
the work it builds on (SparseInst, TopFormer, DETR, Mask2Former, MinVIS), and
every option beyond the paper is off; the exceptions are marked "Ours" and
listed in docs/defaults.md with what they were measured to cost or give.
"""
import dataclasses

from detectron2.config import CfgNode as CN

from mobileinst_core.online_tracker import TrackerSettings


def load_mobileinst_config(config_file: str, opts=(), device: str = None, freeze: bool = True):
    """A detectron2 config with the MobileInst keys, ``config_file`` and ``opts`` merged."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if device:
        cfg.MODEL.DEVICE = device
    if freeze:
        cfg.freeze()
    return cfg


def build_tracker_settings(cfg) -> TrackerSettings:
    """The online tracker's settings from their config keys (each field of
    :class:`TrackerSettings` names its key): what the PyTorch tracker is built from
    and what the export writes into export_meta.json."""
    mi = cfg.MODEL.MOBILEINST
    return TrackerSettings(**{f.name: mi[section][name] for f, section, name in _tracker_keys()})


def _tracker_keys():
    """(field, section, name) of each :class:`TrackerSettings` field and its key
    MODEL.MOBILEINST.<section>.<name>."""
    return [(f, *f.metadata["config_key"].split(".")) for f in dataclasses.fields(TrackerSettings)]


def add_mobileinst_config(cfg):
    """Add the MobileInst keys to a detectron2 config (in place)."""
    cfg.MODEL.MOBILEINST = CN()
    mi = cfg.MODEL.MOBILEINST
    mi.NUM_CLASSES = 80
    # Backbone features used as the local features X3, X4, X5, in stride order
    # (X3 at stride 8); e.g. ["res3", "res4", "res5"] for detectron2's ResNet.
    mi.IN_FEATURES = ["x3", "x4", "x5"]
    # The backbone feature used as the global feature X6 (TopFormer's and
    # MobileNetV2's "x6", stride 64). "" derives X6 from X5 by average pooling
    # to stride 64, for backbones without a global branch (mobileinst.features).
    mi.GLOBAL_FEATURE = "x6"

    # ---- semantic-enhanced mask decoder -> X_mask ---------------------------
    mi.MASK_DECODER = CN()
    # A name in MASK_DECODER_REGISTRY (mobileinst.mask_decoder): the paper's
    # "SemanticEnhancedMaskDecoder" (X_mask at 1/8), or beyond the paper
    # "HighResMaskDecoder" (one more top-down level on the backbone's stride-4
    # feature: X_mask at 1/4, finer masks for small objects), or a user's.
    mi.MASK_DECODER.NAME = "SemanticEnhancedMaskDecoder"
    # Ours: width of the fusion blocks, 128 (paper: not given; MOBILEINST.md's
    # DEFAULT is SparseInst's 256). With the paper's plain 3x3 convs, 256 makes
    # TopFormer-base 18.5 GFLOPs at 640x853 against 7.5 (docs/defaults.md),
    # more than the paper's phone latency leaves room for. Accuracy unmeasured.
    mi.MASK_DECODER.CHANNELS = 128
    mi.MASK_DECODER.KERNEL_DIM = 128  # channels of X_mask and of the kernels K (DEFAULT)
    mi.MASK_DECODER.NORM = "BN"  # norm of the fusion convs (DEFAULT: BN)
    # Beyond the paper (off): append 2 normalised coordinate channels before the
    # output conv, as SparseInst's decoder does. Unmeasured against off.
    mi.MASK_DECODER.COORD_FEATURES = False
    # Beyond the paper (off; the paper's fusion convs are plain 3x3 convs):
    # depthwise-separable 3x3 convs in the fusion blocks, 2.4x faster mask
    # decoder on one CPU core (tools/benchmark.py).
    mi.MASK_DECODER.DEPTHWISE = False

    # ---- dual transformer instance decoder ---------------------------------
    mi.INSTANCE_DECODER = CN()
    # A name in INSTANCE_DECODER_REGISTRY (mobileinst.instance_decoder): the
    # paper's "DualInstanceDecoder", or beyond the paper
    # "PooledClassDualInstanceDecoder" (adds class logits from X_mask features
    # averaged inside each query's soft mask; shapes classes learn faster), or a user's.
    mi.INSTANCE_DECODER.NAME = "DualInstanceDecoder"
    # DEFAULTS (MOBILEINST.md): N = 100 queries, hidden 256, 8 heads, FFN 512,
    # pre-norm, no dropout (Mask2Former's).
    mi.INSTANCE_DECODER.NUM_QUERIES = 100
    mi.INSTANCE_DECODER.HIDDEN_DIM = 256
    mi.INSTANCE_DECODER.NUM_HEADS = 8
    mi.INSTANCE_DECODER.DIM_FEEDFORWARD = 512
    # Stride of X_L: 64 max-pools X_mask to the size of X6 (paper); a smaller
    # multiple of X_mask's stride gives the local stage a finer map (helps
    # small inputs).
    mi.INSTANCE_DECODER.LOCAL_POOL_STRIDE = 64

    # ---- loss ---------------------------------------------------------------
    mi.LOSS = CN()
    # The paper: L = 2 L_cls + 2 L_mask (dice + pixel-wise BCE) + 1 L_obj.
    mi.LOSS.CLASS_WEIGHT = 2.0
    mi.LOSS.MASK_DICE_WEIGHT = 2.0
    mi.LOSS.MASK_PIXEL_WEIGHT = 2.0
    mi.LOSS.OBJECTNESS_WEIGHT = 1.0
    # With PooledClassDualInstanceDecoder: cross-entropy of the pooled class head
    # on features averaged inside each ground-truth mask (no matching involved).
    mi.LOSS.POOLED_CLASS_WEIGHT = 1.0
    # With PooledClassDualInstanceDecoder: cross-entropy of the head's MLP at every
    # position of its feature map that one ground-truth mask covers by more
    # than half (dense class supervision; each object gives many samples).
    mi.LOSS.DENSE_CLASS_WEIGHT = 0.0
    mi.LOSS.FOCAL_ALPHA = 0.25  # DEFAULT (focal loss)
    mi.LOSS.FOCAL_GAMMA = 2.0  # DEFAULT (focal loss)
    # Threshold on mask probabilities when computing the IoU target of L_obj.
    # DEFAULT 0.4 (SparseInst's).
    mi.LOSS.IOU_MASK_THRESHOLD = 0.4

    # ---- matcher (SparseInst's score = dice^alpha * p_cls^beta) -------------
    mi.MATCHER = CN()
    mi.MATCHER.ALPHA = 0.8
    mi.MATCHER.BETA = 0.2

    # ---- inference -----------------------------------------------------------
    mi.INFERENCE = CN()
    # DEFAULTS (SparseInst's post-processing, MOBILEINST.md).
    # (INFERENCE.MASK_THRESHOLD, 0.45, is set with the video keys below: the
    # tracker reads it too)
    mi.INFERENCE.CLS_THRESHOLD = 0.005
    mi.INFERENCE.MAX_DETECTIONS = 100
    # Beyond the paper: rank all (query, class) pairs (Mask2Former) instead of
    # one class per query (SparseInst, the paper's default).
    mi.INFERENCE.MULTI_CLASS = False
    # Beyond the paper (which is NMS-free): > 0 decays the scores of same-class
    # duplicate masks with Matrix NMS (SOLOv2, Gaussian kernel, this sigma).
    # Helps models trained briefly, whose duplicates are not yet suppressed.
    mi.INFERENCE.NMS_SIGMA = 0.0

    # ---- video (the meta-architecture MobileInstVideo) ------------------------
    # Training on frame pairs (t, t+d) with temporal query passing, and online
    # inference with kernel reuse and association, are MobileInstVideo's
    # (mobileinst.video); these keys are its tracker's settings
    # (mobileinst_core.online_tracker.TrackerSettings, which names each key).
    mi.VIDEO = CN()
    for field, section, name in _tracker_keys():
        mi[section][name] = field.default

    # ---- backbones -------------------------------------------------------------
    cfg.MODEL.TOPFORMER = CN()
    cfg.MODEL.TOPFORMER.VARIANT = "base"  # tiny | small | base
    # Path to an official TopFormer ImageNet checkpoint (weights only), or ""
    # (random initialisation). The COCO configs name the official file under
    # pretrained/; read only when MODEL.WEIGHTS is "" (mobileinst.utils.pretrained).
    cfg.MODEL.TOPFORMER.WEIGHTS = ""
    cfg.MODEL.TOPFORMER.DROP_PATH_RATE = 0.1  # DEFAULT (TopFormer's)
    cfg.MODEL.TOPFORMER.NORM = "BN"  # TopFormer's

    cfg.MODEL.SEAFORMER = CN()
    cfg.MODEL.SEAFORMER.VARIANT = "base"  # tiny | small | base | large
    # Path to an official SeaFormer ImageNet checkpoint (SeaFormer_T/S/B/L.pth,
    # weights only; the classifier linear.* is ignored), or "".
    cfg.MODEL.SEAFORMER.WEIGHTS = ""
    # Stochastic depth of the SeaFormer layers (0 up to this, linearly per layer).
    cfg.MODEL.SEAFORMER.DROP_PATH_RATE = 0.1
    # Norm after every bias-free conv ("BN" as the official checkpoints; "GN" for
    # small-batch training).
    cfg.MODEL.SEAFORMER.NORM = "BN"

    cfg.MODEL.MOBILENETV2 = CN()
    # Path to torchvision's MobileNetV2 ImageNet state dict, or "" (as
    # TOPFORMER.WEIGHTS: read only when MODEL.WEIGHTS is "").
    cfg.MODEL.MOBILENETV2.WEIGHTS = ""
    cfg.MODEL.MOBILENETV2.NORM = "BN"

    # ---- data ----------------------------------------------------------------
    cfg.INPUT.SAMPLING_FRAME_RANGE = 5  # d in [1, range] for frame pairs (DEFAULT)
    # Beyond the paper: shares of the training samples drawn from each set of DATASETS.TRAIN (same
    # order; normalised to sum 1), e.g. (1.0, 0.75) for YouTube-VIS videos and
    # COCO pseudo videos (mobileinst.data.sampler). Empty: every sample of every
    # set alike (detectron2's DATALOADER.SAMPLER_TRAIN).
    cfg.DATASETS.TRAIN_RATIOS = ()
    # Beyond the paper: copy-paste (mobileinst.data.copy_paste). With probability
    # PROB a training image gets 1..MAX_OBJECTS objects of another training image
    # pasted on (images only; video pairs are not pasted).
    cfg.INPUT.COPY_PASTE = CN()
    cfg.INPUT.COPY_PASTE.ENABLED = False
    cfg.INPUT.COPY_PASTE.PROB = 0.5
    cfg.INPUT.COPY_PASTE.MAX_OBJECTS = 3

    # ---- solver ----------------------------------------------------------------
    # DEFAULTS (SparseInst's optimiser): AdamW, the backbone at the base LR.
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Beyond the paper: exponential moving average of the weights
    # (mobileinst.engine.ModelEMA), copied into the model when training ends:
    # model_final.pth and the final evaluation use the averaged weights. DECAY
    # warms up as (1 + n) / (10 + n).
    cfg.SOLVER.EMA = CN()
    cfg.SOLVER.EMA.ENABLED = False
    cfg.SOLVER.EMA.DECAY = 0.999
    # Ours: seconds of training (0 = off): after the first iterations the
    # measured speed sets MAX_ITER to the iterations that fit, and STEPS keep
    # their fractions of the config's MAX_ITER (mobileinst.engine.TimeBudget).
    cfg.SOLVER.TIME_BUDGET = 0.0
    # A tqdm progress bar with the ETA on the main process.
    cfg.SOLVER.PROGRESS_BAR = False
