# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""detectron2's COCOEvaluator, except that no predictions at all score 0, not NaN."""
from detectron2.evaluation import COCOEvaluator


class MobileInstCOCOEvaluator(COCOEvaluator):
    """An empty prediction set is a valid (if useless) result: AP 0.

    MobileInst always predicts masks and boxes, so the tasks default to
    ("bbox", "segm") instead of being guessed from the predictions.
    """

    def __init__(self, dataset_name, tasks=("bbox", "segm"), **kwargs):
        super().__init__(dataset_name, tasks=tasks, **kwargs)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names)
        if coco_eval is None:
            results = {k: 0.0 for k in results}
        return results
