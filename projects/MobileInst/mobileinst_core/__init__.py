# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The numpy core shared by the PyTorch pipeline (``mobileinst``) and the deploy
runtime (``mobileinst_runtime``): numpy, scipy, OpenCV (pycocotools for RLEs);
no torch, no detectron2, no onnxruntime.

* :mod:`.tracker`: the online tracker (kernel reuse every T frames, kernel
  association between keyframes) and its :class:`~.tracker.TrackerSettings`;
* :mod:`.association`, :mod:`.track_book`: kernel association and track bookkeeping;
* :mod:`.frames`, :mod:`.sizes`: frame checks, frame sources, the letterbox, input sizes;
* :mod:`.masks`: mask pasting at the frame size;
* :mod:`.export_meta`: export_meta.json, written and read;
* :mod:`.ytvis_json`, :mod:`.categories`: the YouTube-VIS results json and category ids;
* :mod:`.files`, :mod:`.writer`, :mod:`.visualize`: atomic output files, the
  annotated video + json of a tracked stream.

Dependencies run one way: ``mobileinst`` and ``mobileinst_runtime`` import this
package, it imports neither.
"""
