"""Video: kernel reuse and kernel association (online tracking)."""
from .association import associate, cosine_cost  # noqa: F401
from .predictor import StreamingPredictor, iter_frames  # noqa: F401
from .tracker import VideoTracker  # noqa: F401
