"""Evaluators: COCO/LVIS (detectron2's) for images, YouTube-VIS for video."""
from .coco_evaluation import MobileInstCOCOEvaluator  # noqa: F401
from .ytvis_evaluation import YTVISEvaluator  # noqa: F401
from .ytvis_metric import evaluate_ytvis  # noqa: F401
