# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The online tracker: kernel reuse and kernel association, written once (numpy).

Frames arrive one at a time. Every T-th frame (T = ``reuse_interval``,
VIDEO.REUSE_INTERVAL; the paper's T = 3) is a keyframe: the whole model runs
and gives the kernels K, the scores and the class scores of the N queries. On
the T-1 frames after it only the backbone and the mask decoder run and the
keyframe's kernels are reused on their X_mask (kernel reuse:
``M_{t+i} = K_t . X_mask^{t+i}``).

Track identity = query slot. At each keyframe the new kernels are matched to
the previous keyframe's (:func:`mobileinst_core.kernel_association.associate`) and
permuted into the slots they continue (kernel association); without
association slot i is simply query i. Class scores are averaged over keyframes
per slot (MinVIS, :class:`mobileinst_core.track_book.TrackBook`). A slot gives
masks on a frame when its keyframe score passes ``track_score_threshold``.

:class:`OnlineTracker` owns that loop and its state; a backend supplies two
callables, so the PyTorch model (``mobileinst.video.VideoTracker``) and the
exported graphs on a runtime backend (``mobileinst_runtime.VideoSegmenter``) run
the same loop:

* ``run_keyframe(frame) -> Keyframe``: the whole model on a keyframe;
* ``frame_masks(frame, kernels, context) -> (masks, boxes)``: the masks of the
  tracked kernels (k, D) on a frame, bool (k, H, W) numpy; ``context`` is the
  keyframe's own :attr:`Keyframe.context` on a keyframe, None on the others
  (kernel reuse). ``boxes`` is the backend's (or None) and passed through.

State is O(N x (D + C)): the memory of a stream does not grow with its length,
unless ``keep_results`` keeps the per-frame RLEs of the YouTube-VIS output.
"""
import dataclasses
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .kernel_association import associate
from .track_book import TrackBook


def _setting(default, config_key: str, check: Callable[[Any], bool], expected: str, convert: type):
    """A field of :class:`TrackerSettings`: its default (the config's), its config key
    under MODEL.MOBILEINST, and how export_meta.json's reader checks and converts it."""
    return field(default=default, metadata={"config_key": config_key, "check": check, "expected": expected,
                                            "convert": convert})


def is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def is_bool(v) -> bool:
    return isinstance(v, bool)


@dataclass(frozen=True)
class TrackerSettings:
    """The video settings of the online tracker, written once: each field's default
    is the config's (``mobileinst.config`` adds MODEL.MOBILEINST.VIDEO from these
    fields), the PyTorch tracker is built from them
    (``mobileinst.config.build_tracker_settings``), and the export writes them into
    export_meta.json ("video"; :mod:`mobileinst_core.export_meta` derives the
    checks of its reader from the fields' metadata), which is how the runtime,
    without detectron2, gets them.
    """

    # Kernel reuse: run the instance decoder every T frames (the paper's T = 3).
    reuse_interval: int = _setting(3, "VIDEO.REUSE_INTERVAL", lambda v: is_int(v) and v >= 1, "an int >= 1", int)
    # Kernel association between keyframes (the paper: cosine similarity;
    # DEFAULT, MinVIS's: Hungarian assignment).
    association: bool = _setting(True, "VIDEO.ASSOCIATION", is_bool, "true or false", bool)
    # YouTube-VIS output: keep the top-k (slot, class) pairs per video (DEFAULT 10, MinVIS's).
    max_tracks: int = _setting(10, "VIDEO.MAX_TRACKS", lambda v: is_int(v) and v >= 0, "an int >= 0", int)
    # Ours: a slot gives masks on a frame only where its keyframe score is above
    # this (keeps per-frame cost and output size bounded).
    track_score_threshold: float = _setting(0.05, "VIDEO.TRACK_SCORE_THRESHOLD", is_real, "a number", float)
    # Beyond the paper: > 0 first matches confident tracks (keyframe score >
    # association_score_threshold) to confident queries on 1 - cosine + this
    # weight x (1 - mask IoU), the IoU of the masks that the previous keyframe's
    # kernels and the new kernels give on the new keyframe (kernel reuse one
    # frame further); pairs below association_min_iou are dropped; the rest is
    # matched on cosine. A kernel stays closest to its own query's kernel even
    # when a stronger query has taken over the object; cosine alone cannot see it.
    association_mask_weight: float = _setting(0.0, "VIDEO.ASSOCIATION_MASK_WEIGHT", lambda v: is_real(v) and v >= 0,
                                              "a number >= 0", float)
    association_score_threshold: float = _setting(0.2, "VIDEO.ASSOCIATION_SCORE_THRESHOLD", is_real, "a number",
                                                  float)
    association_min_iou: float = _setting(0.1, "VIDEO.ASSOCIATION_MIN_IOU", is_real, "a number", float)
    # Beyond the paper: non-keyframes run the backbone and the mask decoder on
    # the frame resized by this factor (the keyframe's kernels, 1x1 dynamic
    # convs, apply at any scale; masks are pasted at full size). 1.0 = the
    # paper. The runtime's non-keyframe graph is exported at this scale.
    nonkey_scale: float = _setting(1.0, "VIDEO.NONKEY_SCALE", lambda v: is_real(v) and 0 < v <= 1,
                                   "a number in (0, 1]", float)
    # INFERENCE.MASK_THRESHOLD: the masks of the association's mask term (in
    # export_meta.json at the top level, where the image graphs read it too)
    mask_threshold: float = _setting(0.45, "INFERENCE.MASK_THRESHOLD", lambda v: is_real(v) and 0 <= v <= 1,
                                     "a number in [0, 1]", float)

    def __post_init__(self):
        """Each field checked as export_meta.json's reader checks it (its metadata)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.metadata["check"](value):
                raise ValueError(f"{f.metadata['config_key']} ({f.name}) is {value!r}; expected {f.metadata['expected']}")

    def replace(self, **changes) -> "TrackerSettings":
        """A copy with ``changes`` (field name -> value)."""
        return dataclasses.replace(self, **changes)


class Keyframe(NamedTuple):
    """What ``run_keyframe`` returns, in query order."""

    kernels: np.ndarray  # (N, D) kernels K
    scores: np.ndarray  # (N,) keyframe scores
    class_scores: np.ndarray  # (N, C)
    mask_features: np.ndarray  # (D, h, w) X_mask, for the association's mask term
    context: Any = None  # the backend's own, handed to frame_masks on this frame


class TrackedFrame(NamedTuple):
    """One frame's output: the tracked slots whose keyframe score passes the threshold."""

    masks: np.ndarray  # (k, H, W) bool
    boxes: Any  # what frame_masks gave (the backend's boxes, or None)
    slots: np.ndarray  # (k,) int64 track ids
    scores: np.ndarray  # (k,) keyframe scores
    classes: np.ndarray  # (k,) int64, argmax of the class scores averaged over keyframes


class OnlineTracker:
    """The keyframe / non-keyframe loop, kernel association and track bookkeeping.

    The settings are plain attributes read at every frame (``reuse_interval``,
    ``association``, ``track_score_threshold``, ``association_kwargs``), so a
    caller may change them between streams.
    """

    def __init__(self, settings: TrackerSettings, run_keyframe: Callable[[Any], Keyframe],
                 frame_masks: Callable[[Any, np.ndarray, Any], Tuple[np.ndarray, Any]], keep_results: bool = True):
        self.settings = settings
        self.reuse_interval = int(settings.reuse_interval)
        self.association = bool(settings.association)
        self.max_tracks = int(settings.max_tracks)
        self.track_score_threshold = float(settings.track_score_threshold)
        self.association_kwargs = {
            "mask_weight": float(settings.association_mask_weight),
            "score_threshold": float(settings.association_score_threshold),
            "min_iou": float(settings.association_min_iou),
            "mask_threshold": float(settings.mask_threshold),
        }
        self.keep_results = keep_results
        self._run_keyframe = run_keyframe
        self._frame_masks = frame_masks
        self.reset()

    def reset(self):
        """Start a new stream."""
        self.frame_index = 0
        self.frame_size: Optional[Tuple[int, int]] = None
        self.slot_kernels: Optional[np.ndarray] = None  # K of the last keyframe, in slot order
        self.slot_scores: Optional[np.ndarray] = None  # (N,) scores of the last keyframe, slot order
        self.book = TrackBook(self.max_tracks, self.keep_results)

    @property
    def results(self):
        """Per frame {slot: RLE} (with ``keep_results``)."""
        return self.book.results

    def track(self, frame, size: Sequence[int]) -> TrackedFrame:
        """Segment and track one frame of (height, width) ``size``."""
        size = (int(size[0]), int(size[1]))
        if self.frame_size is None:
            self.frame_size = size
        elif size != self.frame_size:
            raise ValueError(
                f"Frame {self.frame_index} has size {size[1]}x{size[0]} (WxH) but the stream started at "
                f"{self.frame_size[1]}x{self.frame_size[0]}; start a new stream (reset()) for a new size"
            )
        context = None
        if self.frame_index % self.reuse_interval == 0:
            key = self._run_keyframe(frame)
            kernels, scores, class_scores = key.kernels, key.scores, key.class_scores
            if self.association and self.slot_kernels is not None:
                perm = associate(self.slot_kernels, kernels, key.mask_features, self.slot_scores, scores,
                                 **self.association_kwargs)
                kernels, scores, class_scores = kernels[perm], scores[perm], class_scores[perm]
            self.slot_kernels, self.slot_scores = kernels, scores
            self.book.add_keyframe(class_scores)
            context = key.context
        slots = np.nonzero(self.slot_scores > self.track_score_threshold)[0]
        masks, boxes = self._frame_masks(frame, self.slot_kernels[slots], context)
        self.book.add_frame(masks, slots)
        self.frame_index += 1
        classes = self.book.mean_class_scores()[slots].argmax(-1) if len(slots) else np.zeros(0, np.int64)
        return TrackedFrame(masks, boxes, slots, self.slot_scores[slots], classes)

    def top_tracks(self):
        """The top ``max_tracks`` (slot, class, score) of the frames seen so far
        (:meth:`TrackBook.top_tracks`); needs no ``keep_results``."""
        return self.book.top_tracks()

    def ytvis_result(self, video_id=None) -> dict:
        """The YouTube-VIS prediction of the frames seen so far.

        Returns {"video_id", "tracks": [{"score", "category_id" (contiguous),
        "track_id" (slot), "segmentations": [RLE or None per frame]}]}: the
        top ``max_tracks`` (slot, class) pairs by class score averaged over
        keyframes.
        """
        return self.book.ytvis_result(video_id)
