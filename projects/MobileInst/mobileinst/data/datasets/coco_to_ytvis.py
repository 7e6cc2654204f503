# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Category maps from image sets to video sets, for COCO pseudo videos.

Each map is a tuple of rows ``(source id, source name, target id, target
name)``: the category ids of the source (COCO) json and of the target
(YouTube-VIS) json, with their names. Annotations of source categories
without a row are dropped (:mod:`.pseudo_video`).

``COCO_TO_YTVIS_2019`` and ``COCO_TO_YTVIS_2021`` are the maps of the
video-instance-segmentation literature that trains on COCO alongside
YouTube-VIS (VITA, DVIS, CTVIS, MDQE, ...: 21 and 23 COCO
categories). Two are loose on purpose: bicycle becomes motorbike and skis
becomes snowboard.
"""

COCO_TO_YTVIS_2019 = (
    (1, "person", 1, "person"),
    (2, "bicycle", 21, "motorbike"),
    (3, "car", 6, "sedan"),
    (4, "motorcycle", 21, "motorbike"),
    (5, "airplane", 28, "airplane"),
    (7, "train", 17, "train"),
    (8, "truck", 29, "truck"),
    (9, "boat", 34, "boat"),
    (17, "cat", 14, "cat"),
    (18, "dog", 8, "dog"),
    (19, "horse", 18, "horse"),
    (21, "cow", 15, "cow"),
    (22, "elephant", 32, "elephant"),
    (23, "bear", 20, "bear"),
    (24, "zebra", 30, "zebra"),
    (25, "giraffe", 22, "giraffe"),
    (35, "skis", 33, "snowboard"),
    (36, "snowboard", 33, "snowboard"),
    (41, "skateboard", 5, "skateboard"),
    (42, "surfboard", 27, "surfboard"),
    (43, "tennis racket", 40, "tennis_racket"),
)

COCO_TO_YTVIS_2021 = (
    (1, "person", 26, "person"),
    (2, "bicycle", 23, "motorbike"),
    (3, "car", 5, "car"),
    (4, "motorcycle", 23, "motorbike"),
    (5, "airplane", 1, "airplane"),
    (7, "train", 36, "train"),
    (8, "truck", 37, "truck"),
    (9, "boat", 4, "boat"),
    (16, "bird", 3, "bird"),
    (17, "cat", 6, "cat"),
    (18, "dog", 9, "dog"),
    (19, "horse", 19, "horse"),
    (21, "cow", 7, "cow"),
    (22, "elephant", 12, "elephant"),
    (23, "bear", 2, "bear"),
    (24, "zebra", 40, "zebra"),
    (25, "giraffe", 18, "giraffe"),
    (34, "frisbee", 14, "flying_disc"),
    (35, "skis", 31, "snowboard"),
    (36, "snowboard", 31, "snowboard"),
    (41, "skateboard", 29, "skateboard"),
    (42, "surfboard", 33, "surfboard"),
    (43, "tennis racket", 34, "tennis_racket"),
)

# The synthetic sets' analogue (same 5 shapes on both sides): "ring" is left out,
# as COCO has classes YouTube-VIS lacks, so that building the set drops annotations
# and images as it does for COCO.
SYNTHETIC_COCO_TO_YTVIS = (
    (1, "circle", 1, "circle"),
    (2, "square", 2, "square"),
    (3, "triangle", 3, "triangle"),
    (4, "star", 4, "star"),
)
