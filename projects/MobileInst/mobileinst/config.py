# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Config keys of MobileInst.

Every value that the paper does not give (see MOBILEINST.md, "DEFAULT") has a
key here so that it can be changed from YAML or the command line. Each default
is the paper's form: a value the paper gives, else the DEFAULT borrowed from
the work it builds on (SparseInst, TopFormer, DETR, Mask2Former, MinVIS), and
every option beyond the paper is off; the exceptions are marked "Ours" and
listed in docs/defaults.md with what they were measured to cost or give.
"""
from detectron2.config import CfgNode as CN

from mobileinst_core.tracker import TrackerSettings


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
    """The online tracker's settings (MODEL.MOBILEINST.VIDEO, INFERENCE.MASK_THRESHOLD):
    what the PyTorch tracker is built from and what the export writes into export_meta.json."""
    v = cfg.MODEL.MOBILEINST.VIDEO
    return TrackerSettings(
        reuse_interval=v.REUSE_INTERVAL,
        association=v.ASSOCIATION,
        max_tracks=v.MAX_TRACKS,
        track_score_threshold=v.TRACK_SCORE_THRESHOLD,
        association_mask_weight=v.ASSOCIATION_MASK_WEIGHT,
        association_score_threshold=v.ASSOCIATION_SCORE_THRESHOLD,
        association_min_iou=v.ASSOCIATION_MIN_IOU,
        mask_threshold=cfg.MODEL.MOBILEINST.INFERENCE.MASK_THRESHOLD,
        nonkey_scale=v.NONKEY_SCALE,
        reuse_global_features=v.REUSE_GLOBAL_FEATURES,
    )


def add_mobileinst_config(cfg):
    """Add the MobileInst keys to a detectron2 config (in place)."""
    cfg.MODEL.MOBILEINST = CN()
    mi = cfg.MODEL.MOBILEINST
    mi.NUM_CLASSES = 80
    # Ours: pad inputs to a multiple of this; 64 keeps X_mask (1/8) an exact 8x
    # of X6 (1/64) so the max-pool to X_L is a fixed-window pool (exportable).
    mi.SIZE_DIVISIBILITY = 64
    # Backbone features used as the local features X3, X4, X5, in stride order
    # (X3 at stride 8); e.g. ["res3", "res4", "res5"] for detectron2's ResNet.
    mi.IN_FEATURES = ["x3", "x4", "x5"]
    # The backbone feature used as the global feature X6 (TopFormer's and
    # MobileNetV2's "x6", stride 64). "" derives X6 from X5 by average pooling
    # to stride 64, for backbones without a global branch (mobileinst.features).
    mi.GLOBAL_FEATURE = "x6"

    # ---- semantic-enhanced mask decoder -> X_mask (1/8) -------------------
    mi.MASK_DECODER = CN()
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
    # decoder on one CPU core (tools/benchmark.py); accuracy unmeasured.
    mi.MASK_DECODER.DEPTHWISE = False
    # Stride of X_mask: 8 (paper) or 4 (beyond the paper: one more top-down
    # level on the backbone's stride-4 feature HIGH_RES_FEATURE; finer masks
    # for small objects, for a larger mask decoder and mask head).
    mi.MASK_DECODER.OUTPUT_STRIDE = 8
    mi.MASK_DECODER.HIGH_RES_FEATURE = "x2"

    # ---- dual transformer instance decoder ---------------------------------
    mi.DECODER = CN()
    # DEFAULTS (MOBILEINST.md): N = 100 queries, hidden 256, 8 heads, FFN 512,
    # pre-norm; no dropout (Mask2Former's).
    mi.DECODER.NUM_QUERIES = 100
    mi.DECODER.HIDDEN_DIM = 256
    mi.DECODER.NUM_HEADS = 8
    mi.DECODER.DIM_FEEDFORWARD = 512
    mi.DECODER.DROPOUT = 0.0
    mi.DECODER.PRE_NORM = True
    # "max" (paper) or "avg": pooling of X_mask to the size of X6 -> X_L.
    mi.DECODER.LOCAL_POOLING = "max"
    # Stride of X_L: 64 pools X_mask to the size of X6 (paper); a smaller
    # multiple of X_mask's stride gives the local stage a finer map (helps
    # small inputs).
    mi.DECODER.LOCAL_POOL_STRIDE = 64
    # Beyond the paper (1): local-stage layers, each cross- then self-attention
    # on X_L, refining the queries of the layer before.
    mi.DECODER.NUM_LOCAL_LAYERS = 1
    # Beyond the paper: masked attention in the local stage (each query only
    # attends to X_L inside the mask predicted from its global-stage kernel).
    mi.DECODER.MASKED_ATTENTION = False
    # Beyond the paper: add class logits from features of X_mask averaged
    # inside each query's soft mask (an MLP head); shapes classes learn faster.
    mi.DECODER.POOLED_CLASS_HEAD = False
    # Beyond the paper: also supervise the global stage's queries (through the
    # shared heads).
    mi.DECODER.DEEP_SUPERVISION = False
    # Upsample the mask logits (on the grid of X_mask) by this factor for
    # losses and inference; OUTPUT_STRIDE / MASK_UPSAMPLE must be an integer.
    # DEFAULT 2 (SparseInst's SCALE_FACTOR; the paper: "upsampled").
    mi.DECODER.MASK_UPSAMPLE = 2

    # ---- loss ---------------------------------------------------------------
    mi.LOSS = CN()
    # The paper: L = 2 L_cls + 2 L_mask (dice + pixel-wise BCE) + 1 L_obj.
    mi.LOSS.CLASS_WEIGHT = 2.0
    mi.LOSS.MASK_DICE_WEIGHT = 2.0
    mi.LOSS.MASK_PIXEL_WEIGHT = 2.0
    mi.LOSS.OBJECTNESS_WEIGHT = 1.0
    # With DECODER.POOLED_CLASS_HEAD: cross-entropy of the pooled class head on
    # features averaged inside each ground-truth mask (no matching involved).
    mi.LOSS.POOLED_CLASS_WEIGHT = 1.0
    # With DECODER.POOLED_CLASS_HEAD: cross-entropy of the head's MLP at every
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
    mi.INFERENCE.CLS_THRESHOLD = 0.005
    mi.INFERENCE.MASK_THRESHOLD = 0.45
    mi.INFERENCE.MAX_DETECTIONS = 100
    # Beyond the paper: rank all (query, class) pairs (Mask2Former) instead of
    # one class per query (SparseInst, the paper's default).
    mi.INFERENCE.MULTI_CLASS = False
    # Beyond the paper (which is NMS-free): > 0 decays the scores of same-class
    # duplicate masks with Matrix NMS (SOLOv2, Gaussian kernel, this sigma).
    # Helps models trained briefly, whose duplicates are not yet suppressed.
    mi.INFERENCE.NMS_SIGMA = 0.0

    # ---- video ---------------------------------------------------------------
    mi.VIDEO = CN()
    # Temporal query passing during training on frame pairs (t, t+d): the
    # paper's video training (on in the YouTube-VIS configs).
    mi.VIDEO.QUERY_PASSING = False
    # Removed: the "matched" variant of query passing measured no better than the
    # paper's form, the only one now; configs dumped before still load.
    cfg.register_deprecated_key("MODEL.MOBILEINST.VIDEO.QUERY_PASSING_MODE")
    # Also supervise frame t as an image (its own queries, matching and all
    # losses) when training on pairs with query passing (DEFAULT).
    mi.VIDEO.SUPERVISE_KEY_FRAME = True
    # Kernel reuse: run the instance decoder every T frames (the paper's T = 3).
    mi.VIDEO.REUSE_INTERVAL = 3
    # Beyond the paper: non-keyframes also reuse the keyframe's global
    # features X6. A backbone that takes X6 (TopFormer, MobileNetV2) then skips
    # its transformer blocks; with any other backbone, or a derived X6
    # (GLOBAL_FEATURE ""), the decoders get the keyframe's X6 and nothing is saved.
    mi.VIDEO.REUSE_GLOBAL_FEATURES = False
    # Beyond the paper: non-keyframes run the backbone and the mask decoder on
    # the frame resized by this factor (the keyframe's kernels, 1x1 dynamic
    # convs, apply at any scale; masks are pasted at full size). 1.0 = the paper.
    # On a desktop CPU the instance decoder that kernel reuse skips is ~5% of a
    # frame; this is what makes T > 1 pay off there.
    mi.VIDEO.NONKEY_SCALE = 1.0
    # Kernel association between keyframes (the paper: cosine similarity;
    # DEFAULT, MinVIS's: Hungarian assignment).
    mi.VIDEO.ASSOCIATION = True
    # Beyond the paper: > 0 first matches confident tracks (keyframe score >
    # ASSOCIATION_SCORE_THRESHOLD) to confident queries on 1 - cosine + this
    # weight x (1 - mask IoU), the IoU of the masks that the previous keyframe's
    # kernels and the new kernels give on the new keyframe (kernel reuse one
    # frame further); pairs below ASSOCIATION_MIN_IOU are dropped; the rest is
    # matched on cosine. A kernel stays closest to its own query's kernel even
    # when a stronger query has taken over the object; cosine alone cannot see it.
    mi.VIDEO.ASSOCIATION_MASK_WEIGHT = 0.0
    mi.VIDEO.ASSOCIATION_SCORE_THRESHOLD = 0.2
    mi.VIDEO.ASSOCIATION_MIN_IOU = 0.1
    # YouTube-VIS output: keep the top-k (query, class) pairs per video
    # (DEFAULT 10, MinVIS's).
    mi.VIDEO.MAX_TRACKS = 10
    # Ours: RLE-encode a track's mask on a frame only where its keyframe score
    # is above this (keeps per-frame cost and output size bounded).
    mi.VIDEO.TRACK_SCORE_THRESHOLD = 0.05

    # Ours (on; computes the same function): keep conv weights and the input
    # batch in NHWC memory format (torch.channels_last): about 35% less backbone
    # time in PyTorch eager on one CPU core and about 19% less training time.
    mi.CHANNELS_LAST = True

    # Ours (loading, not the model): MODEL.WEIGHTS must fit the model key for
    # key and shape for shape, except for a class head of another number of
    # classes (skipped) and backbone-only (ImageNet) weights; anything else
    # raises an error naming the keys.
    # False: detectron2's behaviour (load whatever fits, warn about the rest).
    mi.CHECKPOINT_STRICT = True

    # ---- backbones -------------------------------------------------------------
    cfg.MODEL.TOPFORMER = CN()
    cfg.MODEL.TOPFORMER.VARIANT = "base"  # tiny | small | base
    # Path to an official TopFormer ImageNet checkpoint (weights only), or ""
    # (random initialisation). The COCO configs name the official file under
    # pretrained/; read only when MODEL.WEIGHTS is "" (mobileinst.utils.pretrained).
    cfg.MODEL.TOPFORMER.WEIGHTS = ""
    cfg.MODEL.TOPFORMER.DROP_PATH_RATE = 0.1  # DEFAULT (TopFormer's)
    cfg.MODEL.TOPFORMER.NORM = "BN"  # TopFormer's
    # Beyond the paper (off): norm of the token pyramid and of the semantic-
    # injection local branch (the full-resolution convs); "" = NORM. Lets
    # small-batch training keep BN where it has many positions and use GN on
    # the 1/64 token grid.
    cfg.MODEL.TOPFORMER.PYRAMID_NORM = ""

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
    cfg.MODEL.MOBILENETV2.WIDTH_MULT = 1.0
    # Ours (the paper does not say how MobileNetV2 gives X6): TopFormer-base's
    # token transformer and semantic injection on MobileNetV2's levels, with
    # these channels of X3..X5, heads, blocks and drop path. Unmeasured.
    cfg.MODEL.MOBILENETV2.OUT_CHANNELS = 256
    cfg.MODEL.MOBILENETV2.NUM_HEADS = 8
    cfg.MODEL.MOBILENETV2.DEPTH = 4
    cfg.MODEL.MOBILENETV2.DROP_PATH_RATE = 0.1
    cfg.MODEL.MOBILENETV2.NORM = "BN"

    # ---- data ----------------------------------------------------------------
    cfg.INPUT.SAMPLING_FRAME_RANGE = 5  # d in [1, range] for frame pairs (DEFAULT)
    cfg.INPUT.PSEUDO_VIDEO = False  # beyond the paper: COCO images as 2-view pseudo videos
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
    cfg.SOLVER.AMSGRAD = False
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
