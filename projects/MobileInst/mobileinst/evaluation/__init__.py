"""Evaluators: detectron2's COCO/LVIS ones for images, YouTube-VIS for video."""
