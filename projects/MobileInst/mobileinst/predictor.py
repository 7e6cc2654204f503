# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Image predictor: detectron2's ``DefaultPredictor`` with MobileInst's checks.

    predictor = MobileInstPredictor(cfg)
    outputs = predictor(cv2.imread("input.jpg"))   # {"instances": Instances}

Differs from ``DefaultPredictor`` in what it refuses: ``MODEL.WEIGHTS`` is read
as data and must fit the model (``MobileInstCheckpointer``), NUM_CLASSES must
match the classes of ``DATASETS.TEST[0]`` when they are known, and a frame
that is not an HxWx3 uint8 BGR array gets an error saying what was given.
Once the weights are loaded, BatchNorm is folded into the convolutions before
it (:func:`mobileinst.utils.fuse.fuse_conv_bn`, as the export does): the same
function up to float rounding, one op less per conv. ``predictor.model`` is
then for inference only (its state dict no longer fits checkpoints).
"""
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from mobileinst_core.frames import check_frame

from .data import check_min_size_test, check_num_classes
from .utils.checkpoint import load_weights
from .utils.fuse import fuse_conv_bn

__all__ = ["MobileInstPredictor", "check_predictor_config"]


def check_predictor_config(cfg):
    """What a predictor checks before it builds anything: INPUT.FORMAT, INPUT.MIN_SIZE_TEST
    and NUM_CLASSES against ``DATASETS.TEST[0]`` (whose metadata names the classes)."""
    if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT is {cfg.INPUT.FORMAT!r}; expected 'RGB' or 'BGR'")
    check_min_size_test(cfg)
    if len(cfg.DATASETS.TEST):
        check_num_classes(cfg, [cfg.DATASETS.TEST[0]], load=False)


class MobileInstPredictor(DefaultPredictor):
    """``DefaultPredictor`` for MobileInst: one BGR uint8 image in, ``{"instances"}`` out."""

    def __init__(self, cfg):  # DefaultPredictor.__init__ with the safe, strict loader
        check_predictor_config(cfg)
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        load_weights(self.model, cfg.MODEL.WEIGHTS)
        self.model = fuse_conv_bn(self.model, inplace=True)  # after the weights: BN folded as in the export
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    @torch.no_grad()
    def __call__(self, original_image):
        return super().__call__(check_frame(original_image, "Image"))
