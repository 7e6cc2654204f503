"""Video (paper Sec. 3.4): the meta-architecture ``MobileInstVideo`` (temporal query
passing in training; kernel reuse and kernel association at inference) and its
online tracker, streaming predictor and frame sources."""
from .keyframe import keyframe_scores  # noqa: F401
from .meta_arch import MobileInstVideo  # noqa: F401
from .streaming import StreamingPredictor, iter_frames  # noqa: F401
from .tracker import VideoTracker  # noqa: F401
