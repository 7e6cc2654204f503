"""Bad input gets a clear error naming the file or field; empty cases do not crash."""
import os

import numpy as np
import pytest
import torch
from conftest import small_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances

from mobileinst.data import MobileInstDatasetMapper
from mobileinst.data.datasets.builtin import register_all_synthetic


def test_missing_dataset_names_path_and_how_to_make_it(tmp_path):
    register_all_synthetic(str(tmp_path / "nowhere"), prefix="missing_synthetic")
    with pytest.raises(FileNotFoundError, match=r"nowhere.*prepare_synthetic\.py"):
        DatasetCatalog.get("missing_synthetic_coco_train")
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        DatasetCatalog.get("missing_synthetic_ytvis_val")


def test_unreadable_image_names_the_file(tmp_path, synthetic_root):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    d = dict(DatasetCatalog.get("test_synthetic_coco_train")[0], file_name=str(bad))
    mapper = MobileInstDatasetMapper(small_cfg(), is_train=True)
    with pytest.raises(Exception, match="broken.jpg"):
        mapper(d)


def test_empty_predictions_evaluate_to_zero(synthetic_root, tmp_path):
    from mobileinst.evaluation import MobileInstCOCOEvaluator

    ev = MobileInstCOCOEvaluator("test_synthetic_coco_val", output_dir=str(tmp_path))
    ev.reset()
    for d in DatasetCatalog.get("test_synthetic_coco_val"):
        inst = Instances((d["height"], d["width"]))
        inst.pred_masks = torch.zeros(0, d["height"], d["width"], dtype=torch.bool)
        inst.scores = torch.zeros(0)
        inst.pred_classes = torch.zeros(0, dtype=torch.int64)
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()
    assert res["segm"]["AP"] == 0.0 and res["segm"]["AP50"] == 0.0


def test_images_without_annotations_train_and_evaluate(synthetic_root, tmp_path):
    import copy

    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import inference_on_dataset

    from mobileinst.evaluation import MobileInstCOCOEvaluator
    from train_net import Trainer

    dicts = copy.deepcopy(DatasetCatalog.get("test_synthetic_coco_val"))[:6]
    for d in dicts[:3]:
        d["annotations"] = []
    name = "test_synthetic_some_empty"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: dicts)
        meta = MetadataCatalog.get("test_synthetic_coco_val")
        MetadataCatalog.get(name).set(evaluator_type="coco", thing_classes=meta.thing_classes,
                                      thing_dataset_id_to_contiguous_id=meta.thing_dataset_id_to_contiguous_id)
    cfg = small_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
                    "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "SOLVER.MAX_ITER", "2",
                    "OUTPUT_DIR", str(tmp_path))
    trainer = Trainer(cfg)
    trainer.train()  # batches of images without objects train
    model = trainer.model.eval()
    res = inference_on_dataset(model, Trainer.build_test_loader(cfg, name),
                               MobileInstCOCOEvaluator(name, output_dir=str(tmp_path)))
    assert np.isfinite(res["segm"]["AP"]) and 0 <= res["segm"]["AP"] <= 100


def test_checkpoint_with_wrong_shapes_names_the_keys(tmp_path, caplog):
    import logging

    from detectron2.checkpoint import DetectionCheckpointer

    model = build_model(small_cfg())
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["instance_decoder.cls_head.weight"] = torch.zeros(7, sd["instance_decoder.cls_head.weight"].shape[1])
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(build_model(small_cfg())).load(str(tmp_path / "bad.pth"))
    assert "instance_decoder.cls_head.weight" in caplog.text


def test_checkpoint_is_not_unpickled(tmp_path):
    """A checkpoint that needs full pickle (arbitrary objects) is refused."""
    from detectron2.checkpoint import DetectionCheckpointer

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": {}, "evil": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception):
        DetectionCheckpointer(build_model(small_cfg())).load(str(tmp_path / "evil.pth"))


def test_atomic_json_write_keeps_the_old_file_on_failure(tmp_path):
    """Every json the project writes (results, metrics, export meta, data sets)
    goes through atomic_write_json: a failed write leaves the earlier file whole
    and no temporary file behind."""
    import json

    from mobileinst_runtime.files import atomic_write_json

    path = tmp_path / "sub" / "results.json"
    assert atomic_write_json(str(path), {"AP": 1.5}, indent=2) == str(path)
    assert json.loads(path.read_text()) == {"AP": 1.5}
    with pytest.raises(TypeError):
        atomic_write_json(str(path), {"AP": object()})  # json cannot encode it, mid-write
    assert json.loads(path.read_text()) == {"AP": 1.5}
    assert sorted(os.listdir(path.parent)) == ["results.json"]
