"""Evaluators: COCO/LVIS (detectron2's) for images, YouTube-VIS for video."""
from .coco_evaluation import MobileInstCOCOEvaluator  # noqa: F401
from .ytvis_evaluation import YTVISEvaluator, evaluate_ytvis  # noqa: F401
