"""Shared fixtures: a small synthetic data set and a small model config."""
import contextlib
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "projects", "MobileInst")):
    if p not in sys.path:
        sys.path.insert(0, p)

torch.set_num_threads(min(2, torch.get_num_threads()))

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")  # data files the tests read
SYNTH_CONFIG = os.path.join(ROOT, "configs", "synthetic", "MobileInst_TopFormer_tiny_synthetic.yaml")
EXPORT_H, EXPORT_W = 128, 160  # the input size of the ``exported`` graphs
# sitecustomize.py for a child process in which torch, detectron2 and mobileinst cannot be imported
IMPORT_BLOCKER = (
    "import sys\n"
    "class _Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'detectron2', 'mobileinst', 'torchvision'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, _Block())\n"
)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Small synthetic COCO + YouTube-VIS sets, registered as ``test_synthetic_*``."""
    from mobileinst.data.datasets.builtin import register_all_synthetic
    from mobileinst.data.synthetic import generate_all

    root = str(tmp_path_factory.mktemp("d2datasets"))
    generate_all(root, seed=3, num_train_images=64, num_val_images=16, num_train_videos=8,
                 num_val_videos=3, image_size=(128, 128), num_frames=8, showcase_size=(96, 128), showcase_frames=12)
    register_all_synthetic(root, prefix="test_synthetic")
    return root


def small_cfg(*opts):
    """The synthetic config, shrunk for fast tests; ``opts`` are KEY VALUE overrides."""
    from detectron2.config import get_cfg

    from mobileinst import add_mobileinst_config

    cfg = get_cfg()
    add_mobileinst_config(cfg)
    cfg.merge_from_file(SYNTH_CONFIG)
    cfg.merge_from_list([
        "DATASETS.TRAIN", "('test_synthetic_coco_train',)",
        "DATASETS.TEST", "('test_synthetic_coco_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.WARMUP_ITERS", "10",
    ])
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="session")
def exported(tmp_path_factory, synthetic_root):
    """One tiny export shared by the export and backend tests: random weights (seed 0),
    every graph at EXPORT_H x EXPORT_W as ONNX, TorchScript and int8 (calibrated on the
    synthetic COCO val images), and for ncnn (``--ncnn``) where ncnn and pnnx are
    installed. Returns (cfg, graphs folder, the export's report)."""
    import importlib.util

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from mobileinst.export import export

    out = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model(small_cfg())
    DetectionCheckpointer(model, str(out)).save("weights")
    cfg = small_cfg("MODEL.WEIGHTS", str(out / "weights.pth"), "DATASETS.TEST", "('test_synthetic_coco_val',)")
    ncnn = all(importlib.util.find_spec(p) is not None for p in ("ncnn", "pnnx"))
    report = export(cfg, str(out / "graphs"), EXPORT_H, EXPORT_W, do_quantize=True,
                    calib_dir=os.path.join(synthetic_root, "synthetic_coco", "val"), ncnn=ncnn)
    return cfg, out / "graphs", report


@contextlib.contextmanager
def catalog_names_set_aside(names):
    """Within the block, the data set ``names`` are not registered (the registrations
    made on import are set aside) and the block may register them anew; afterwards
    what the block registered is removed and the earlier registrations put back."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    saved = {}
    for n in names:
        if n in DatasetCatalog.list():
            saved[n] = (DatasetCatalog[n], MetadataCatalog.get(n).as_dict())
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    try:
        yield
    finally:
        for n in names:
            if n in DatasetCatalog.list():
                DatasetCatalog.remove(n)
                MetadataCatalog.remove(n)
        for n, (func, meta) in saved.items():
            DatasetCatalog.register(n, func)
            meta.pop("name", None)
            MetadataCatalog.get(n).set(**meta)
