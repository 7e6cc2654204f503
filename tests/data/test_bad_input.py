"""Bad input gets a clear error naming the file or field; empty cases do not crash.

docs/bad_input.md lists every case tried and what it gets; each has a test here.
"""
import copy
import json
import logging
import os
import pickle
import re
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, SYNTH_CONFIG, small_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances

from mobileinst.data import MobileInstDatasetMapper
from mobileinst.data.datasets.builtin import register_all_synthetic
from mobileinst.utils.checkpoint import CheckpointMismatchError, MobileInstCheckpointer, load_weights
from mobileinst.utils.weights_io import UnsafeCheckpointError

sys.path.insert(0, os.path.join(ROOT, "tools"))


# --------------------------------------------------------------------------- data sets (already clear)


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


def _register(name, dicts, like="test_synthetic_coco_val"):
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
        meta = MetadataCatalog.get(like)
        MetadataCatalog.get(name).set(evaluator_type="coco", thing_classes=meta.thing_classes,
                                      thing_dataset_id_to_contiguous_id=meta.thing_dataset_id_to_contiguous_id)
    return name


def test_images_without_annotations_train_and_evaluate(synthetic_root, tmp_path):
    from detectron2.evaluation import inference_on_dataset

    from mobileinst.evaluation import MobileInstCOCOEvaluator
    from train_net import Trainer

    dicts = copy.deepcopy(DatasetCatalog.get("test_synthetic_coco_val"))[:6]
    for d in dicts[:3]:
        d["annotations"] = []
    name = _register("test_synthetic_some_empty", dicts)
    cfg = small_cfg("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
                    "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "SOLVER.MAX_ITER", "2",
                    "OUTPUT_DIR", str(tmp_path))
    trainer = Trainer(cfg)
    trainer.train()  # batches of images without objects train
    model = trainer.model.eval()
    res = inference_on_dataset(model, Trainer.build_test_loader(cfg, name),
                               MobileInstCOCOEvaluator(name, output_dir=str(tmp_path)))
    assert np.isfinite(res["segm"]["AP"]) and 0 <= res["segm"]["AP"] <= 100


def test_atomic_json_write_keeps_the_old_file_on_failure(tmp_path):
    """Every json the project writes (results, metrics, export meta, data sets)
    goes through atomic_write_json: a failed write leaves the earlier file whole
    and no temporary file behind."""
    from mobileinst_core.files import atomic_write_json

    path = tmp_path / "sub" / "results.json"
    assert atomic_write_json(str(path), {"AP": 1.5}, indent=2) == str(path)
    assert json.loads(path.read_text()) == {"AP": 1.5}
    with pytest.raises(TypeError):
        atomic_write_json(str(path), {"AP": object()})  # json cannot encode it, mid-write
    assert json.loads(path.read_text()) == {"AP": 1.5}
    assert sorted(os.listdir(path.parent)) == ["results.json"]


# --------------------------------------------------------------------------- weights are data, never code


class _Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _EvilOpen(_Evil):
    """Unpickling this creates ``marker`` through builtins.open."""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory, synthetic_root):
    """Weights of the small model: .pth, .pkl (Detectron2 model-zoo format), crafted pickles."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    sd = build_model(small_cfg()).state_dict()
    torch.save({"model": sd}, d / "good.pth")
    with open(d / "good.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "test"}, f)
    paths = {"good.pth": str(d / "good.pth"), "good.pkl": str(d / "good.pkl"), "state_dict": sd}
    for kind, cls in (("system", _Evil), ("open", _EvilOpen)):
        marker = d / f"pwned_{kind}"
        with open(d / f"evil_{kind}.pkl", "wb") as f:  # model-zoo layout, one entry runs code
            pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": cls(marker)}, f)
        torch.save({"model": sd, "extra": cls(marker)}, d / f"evil_{kind}.pth")
        paths[f"evil_{kind}.pkl"] = str(d / f"evil_{kind}.pkl")
        paths[f"evil_{kind}.pth"] = str(d / f"evil_{kind}.pth")
        paths[f"marker_{kind}"] = str(marker)
    return paths


EVIL = ["evil_system.pkl", "evil_open.pkl", "evil_system.pth", "evil_open.pth"]


def _assert_refused(info, weights, name):
    assert name in str(info.value) and "refused" in str(info.value)
    assert not os.path.exists(weights["marker_system"]) and not os.path.exists(weights["marker_open"])


@pytest.mark.parametrize("evil", EVIL)
def test_crafted_pickle_is_refused_by_the_loader(weights, evil):
    with pytest.raises(UnsafeCheckpointError) as info:
        load_weights(build_model(small_cfg()), weights[evil])
    _assert_refused(info, weights, evil)


@pytest.mark.parametrize("evil", ["evil_system.pkl", "evil_system.pth"])
def test_crafted_pickle_is_refused_by_train_net(weights, evil, tmp_path, monkeypatch):
    """train_net.py: training (Trainer.resume_or_load), --eval-only, and --resume from a
    crafted last checkpoint."""
    from detectron2.engine import default_argument_parser

    import train_net

    cfg = small_cfg("MODEL.WEIGHTS", weights[evil], "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1")
    trainer = train_net.Trainer(cfg)
    with pytest.raises(UnsafeCheckpointError) as info:
        trainer.resume_or_load(resume=False)
    _assert_refused(info, weights, evil)

    # main() --eval-only (setup() replaced: detectron2's default_setup changes the loggers of the session)
    monkeypatch.setattr(train_net, "setup", lambda args: cfg)
    args = default_argument_parser().parse_args(["--config-file", SYNTH_CONFIG, "--eval-only"])
    with pytest.raises(UnsafeCheckpointError) as info:
        train_net.main(args)
    _assert_refused(info, weights, evil)

    # --resume reads the checkpoint named in OUTPUT_DIR/last_checkpoint
    ext = os.path.splitext(evil)[1]
    os.symlink(weights[evil], tmp_path / f"model_0000009{ext}")
    (tmp_path / "last_checkpoint").write_text(f"model_0000009{ext}")
    with pytest.raises(UnsafeCheckpointError) as info:
        train_net.Trainer(cfg).resume_or_load(resume=True)
    _assert_refused(info, weights, "model_0000009")
    assert "--resume" in str(info.value)
    assert not (tmp_path / "metrics.json").exists(), "a failed run left an empty metrics.json"


@pytest.mark.parametrize("evil", ["evil_system.pkl", "evil_open.pth"])
def test_crafted_pickle_is_refused_by_demo_predictors_export_benchmark(weights, evil, tmp_path, synthetic_root):
    import benchmark

    import demo
    from mobileinst.export import export
    from mobileinst.predictor import MobileInstPredictor
    from mobileinst.video import StreamingPredictor

    cfg = small_cfg("MODEL.WEIGHTS", weights[evil])
    for build in (StreamingPredictor, MobileInstPredictor):
        with pytest.raises(UnsafeCheckpointError) as info:
            build(cfg)
        _assert_refused(info, weights, evil)
    out = tmp_path / "demo"
    with pytest.raises(UnsafeCheckpointError) as info:
        demo.run(cfg, _video_dir(synthetic_root), str(out))
    _assert_refused(info, weights, evil)
    assert not out.exists()
    with pytest.raises(UnsafeCheckpointError) as info:
        export(cfg, str(tmp_path / "export"), 64, 64)
    _assert_refused(info, weights, evil)
    assert not (tmp_path / "export").exists()
    threads = torch.get_num_threads()
    try:
        with pytest.raises(UnsafeCheckpointError) as info:
            benchmark.main(["--config-file", SYNTH_CONFIG, "--weights", weights[evil], "--short-side", "64",
                            "--threads", str(threads), "--runs", "1", "--warmup", "0", "--no-maskrcnn",
                            "--output", str(tmp_path / "b.json")])
    finally:
        torch.set_num_threads(threads)
    _assert_refused(info, weights, evil)
    assert "--weights" in str(info.value) and not (tmp_path / "b.json").exists()


def test_backbone_weights_are_not_unpickled(weights):
    """MODEL.TOPFORMER.WEIGHTS: a crafted file is refused too (torch weights_only)."""
    for evil in ("evil_system.pth", "evil_system.pkl"):
        with pytest.raises(RuntimeError, match="MODEL.TOPFORMER.WEIGHTS"):
            build_model(small_cfg("MODEL.TOPFORMER.WEIGHTS", weights[evil]))
        assert not os.path.exists(weights["marker_system"])


@pytest.mark.parametrize("name", ["good.pth", "good.pkl"])
def test_pth_and_model_zoo_pkl_load_exactly(weights, name):
    model = load_weights(build_model(small_cfg()), weights[name])
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights["state_dict"][k]), k


def test_pkl_with_an_object_array_is_refused(tmp_path, weights):
    sd = {k: v.numpy() for k, v in weights["state_dict"].items()}
    sd["instance_decoder.cls_head.bias"] = np.array([1, "x", None], dtype=object)
    with open(tmp_path / "objects.pkl", "wb") as f:
        pickle.dump({"model": sd, "__author__": "test"}, f)
    with pytest.raises(CheckpointMismatchError, match="cls_head.bias.*object"):
        load_weights(build_model(small_cfg()), str(tmp_path / "objects.pkl"))


def test_missing_weights_name_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS.*nope\.pth"):
        load_weights(build_model(small_cfg()), str(tmp_path / "nope.pth"))
    with pytest.raises(IsADirectoryError, match="MODEL.WEIGHTS"):
        load_weights(build_model(small_cfg()), str(tmp_path))
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    with pytest.raises(RuntimeError, match=r"MODEL.WEIGHTS.*text\.pth"):
        load_weights(build_model(small_cfg()), str(tmp_path / "text.pth"))


# --------------------------------------------------------------------------- weights must fit


def test_checkpoint_of_another_architecture_fails_naming_keys_and_shapes(tmp_path, synthetic_root):
    """TopFormer-base weights into the tiny config: an error, not ~200 warnings and AP 0."""
    from train_net import Trainer

    torch.save({"model": build_model(small_cfg("MODEL.TOPFORMER.VARIANT", "base")).state_dict()},
               tmp_path / "base.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(build_model(small_cfg()), str(tmp_path / "base.pth"))
    msg = str(info.value)
    assert "base.pth" in msg and "wrong shapes" in msg and "not in the model" in msg
    assert "backbone.tpm.layer2.conv.4.c.weight: checkpoint (32, 64, 1, 1), model (16, 64, 1, 1)" in msg
    assert "Partial loads that are meant" in msg
    cfg = small_cfg("MODEL.WEIGHTS", str(tmp_path / "base.pth"), "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(CheckpointMismatchError, match="base.pth"):
        Trainer(cfg).resume_or_load(resume=False)
    # a config option difference: a missing module is named with its shape
    sd = build_model(small_cfg()).state_dict()
    sd = {k: v for k, v in sd.items() if "pooled_cls" not in k}
    torch.save({"model": sd}, tmp_path / "no_pooled.pth")
    missing = r"missing from the checkpoint \(4\): instance_decoder.pooled_class_head.pooled_cls.0.weight \(128, 64\)"
    with pytest.raises(CheckpointMismatchError, match=missing):
        load_weights(build_model(small_cfg()), str(tmp_path / "no_pooled.pth"))
    # strict=False (from Python): detectron2's behaviour, what fits is loaded
    from mobileinst.utils.checkpoint import MobileInstCheckpointer

    MobileInstCheckpointer(build_model(small_cfg()), strict=False).load(str(tmp_path / "no_pooled.pth"))


def test_checkpoint_with_other_classes_skips_only_the_class_head(tmp_path, caplog, weights):
    """A COCO model into a YouTube-VIS model: the class head is skipped and named."""
    sd = dict(weights["state_dict"])
    for k in ("instance_decoder.cls_head.weight", "instance_decoder.pooled_class_head.pooled_cls.2.weight"):
        sd[k] = torch.randn(7, sd[k].shape[1])
    for k in ("instance_decoder.cls_head.bias", "instance_decoder.pooled_class_head.pooled_cls.2.bias"):
        sd[k] = torch.randn(7)
    torch.save({"model": sd}, tmp_path / "other_classes.pth")
    with caplog.at_level(logging.WARNING):
        model = load_weights(build_model(small_cfg()), str(tmp_path / "other_classes.pth"))
    assert "instance_decoder.cls_head.weight (7, 128) -> (5, 128)" in caplog.text
    assert "instance_decoder.pooled_class_head.pooled_cls.2.bias (7,) -> (5,)" in caplog.text
    own = model.state_dict()
    assert torch.equal(own["instance_decoder.kernel_head.weight"], sd["instance_decoder.kernel_head.weight"])
    assert own["instance_decoder.cls_head.weight"].shape == (5, 128)


def test_backbone_only_weights_load_into_a_detector(tmp_path, caplog, weights):
    """ImageNet backbone weights (bare keys, classification head) as MODEL.WEIGHTS."""
    body = {k[len("backbone."):]: v for k, v in weights["state_dict"].items() if k.startswith("backbone.")}
    body["head.weight"], body["head.bias"] = torch.randn(1000, 8), torch.randn(1000)
    torch.save({"state_dict": body}, tmp_path / "imagenet.pth")
    with caplog.at_level(logging.WARNING):
        model = load_weights(build_model(small_cfg()), str(tmp_path / "imagenet.pth"))
    assert "backbone-only" in caplog.text and "dropped 2 classification-head" in caplog.text
    assert "instance_decoder: 69, mask_decoder: 59" in caplog.text
    assert torch.equal(model.state_dict()["backbone.tpm.stem.0.c.weight"], body["tpm.stem.0.c.weight"])
    # the weights of another variant are refused, naming the key
    other = {k[len("backbone."):]: v for k, v in
             build_model(small_cfg("MODEL.TOPFORMER.VARIANT", "small")).state_dict().items()
             if k.startswith("backbone.")}
    torch.save(other, tmp_path / "imagenet_small.pth")
    with pytest.raises(CheckpointMismatchError, match=r"backbone weights that do not fit.*\n.*wrong shapes"):
        load_weights(build_model(small_cfg()), str(tmp_path / "imagenet_small.pth"))


def test_checkpoint_with_wrong_shapes_names_the_keys(tmp_path):
    sd = dict(build_model(small_cfg()).state_dict())
    sd["mask_decoder.output.weight"] = torch.zeros(3, 66, 1, 1)
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError,
                       match=r"mask_decoder.output.weight: checkpoint \(3, 66, 1, 1\), model \(64, 66, 1, 1\)"):
        MobileInstCheckpointer(build_model(small_cfg())).load(str(tmp_path / "bad.pth"))


def test_resume_reads_optimizer_scheduler_and_iteration(tmp_path, synthetic_root):
    """--resume: detectron2's own checkpoints (optimizer, scheduler, iteration) load weights-only."""
    from train_net import Trainer

    small = ("SOLVER.IMS_PER_BATCH", "2", "DATASETS.TEST", "()")  # no evaluation after training
    cfg = small_cfg("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1", *small)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (tmp_path / "model_final.pth").exists()
    trainer2 = Trainer(small_cfg("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2", *small))
    trainer2.resume_or_load(resume=True)
    assert trainer2.start_iter == 1
    assert trainer2.optimizer.state_dict()["state"], "optimizer state was not restored"
    assert trainer2.scheduler.last_epoch == trainer.scheduler.last_epoch
    a, b = trainer.model.state_dict(), trainer2.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- NUM_CLASSES


@pytest.mark.parametrize("num_classes", [3, 7])
def test_num_classes_is_checked_against_the_datasets(num_classes, tmp_path, synthetic_root):
    """Fewer classes failed at iteration 0 in the matcher, more in the final evaluation."""
    from train_net import Trainer

    from mobileinst.predictor import MobileInstPredictor
    from mobileinst.video import StreamingPredictor

    expect = rf"MODEL.MOBILEINST.NUM_CLASSES is {num_classes} but DATASETS.TRAIN 'test_synthetic_coco_train' has 5"
    cfg = small_cfg("MODEL.MOBILEINST.NUM_CLASSES", str(num_classes), "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=expect):
        Trainer(cfg)
    expect = rf"NUM_CLASSES is {num_classes} but DATASETS.TEST 'test_synthetic_coco_val' has 5 classes"
    with pytest.raises(ValueError, match=expect):  # --eval-only: Trainer.test builds the evaluator
        Trainer.build_evaluator(cfg, "test_synthetic_coco_val")
    for build in (StreamingPredictor, MobileInstPredictor):
        with pytest.raises(ValueError, match=expect):
            build(cfg)
    cfg = small_cfg("MODEL.MOBILEINST.NUM_CLASSES", str(num_classes), "DATASETS.TRAIN", "()")
    with pytest.raises(ValueError, match=expect):  # a test set alone
        from mobileinst.data import check_num_classes

        check_num_classes(cfg)


def test_num_classes_of_a_dataset_known_only_once_loaded(tmp_path, synthetic_root):
    """register_coco_instances sets thing_classes only when the json is read: it is read."""
    from detectron2.data.datasets import register_coco_instances

    from mobileinst.data import check_num_classes

    name = "test_bad_input_lazy_coco"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, os.path.join(synthetic_root, "synthetic_coco", "annotations",
                                                       "instances_val.json"),
                                os.path.join(synthetic_root, "synthetic_coco", "val"))
    assert MetadataCatalog.get(name).get("thing_classes", None) is None
    cfg = small_cfg("MODEL.MOBILEINST.NUM_CLASSES", "4", "DATASETS.TRAIN", "()", "DATASETS.TEST", f"('{name}',)")
    with pytest.raises(ValueError, match=f"NUM_CLASSES is 4 but DATASETS.TEST '{name}' has 5"):
        check_num_classes(cfg)


def test_unknown_category_id_names_the_json_and_the_annotation(tmp_path, synthetic_root):
    """An --eval-only (or training) COCO json whose annotation has a category_id its
    "categories" do not list: the file and the annotation, not a bare KeyError."""
    from detectron2.data.datasets import register_coco_instances

    import train_net

    data = json.load(open(os.path.join(synthetic_root, "synthetic_coco", "annotations", "instances_val.json")))
    bad = data["annotations"][3]
    bad["category_id"] = 99
    path = tmp_path / "unknown_category.json"
    path.write_text(json.dumps(data))
    name = "test_bad_input_unknown_category"
    register_coco_instances(name, {}, str(path), os.path.join(synthetic_root, "synthetic_coco", "val"))
    try:
        cfg = small_cfg("DATASETS.TEST", f"('{name}',)")
        with pytest.raises(ValueError, match=rf"unknown_category\.json.*annotation {bad['id']} .*category_id 99"):
            train_net.Trainer.build_test_loader(cfg, name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_min_size_test_and_ims_per_batch_are_checked_where_they_are_read(synthetic_root):
    """INPUT.MIN_SIZE_TEST < 0 (0 is detectron2's "no resize"): predictors and the test
    mapper; SOLVER.IMS_PER_BATCH 0 or not a multiple of the processes: the train loader."""
    from mobileinst.data import build_test_mapper, check_batch_size
    from mobileinst.predictor import check_predictor_config

    cfg = small_cfg("INPUT.MIN_SIZE_TEST", "-5")
    for build in (lambda: check_predictor_config(cfg), lambda: build_test_mapper(cfg, "test_synthetic_coco_val")):
        with pytest.raises(ValueError, match=r"INPUT.MIN_SIZE_TEST is -5; expected an int > 0 .* or 0"):
            build()
    check_predictor_config(small_cfg("INPUT.MIN_SIZE_TEST", "0"))
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH is 0; expected an int >= 1"):
        check_batch_size(small_cfg("SOLVER.IMS_PER_BATCH", "0"), 1)
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH is 6 but training runs 4 processes"):
        check_batch_size(small_cfg("SOLVER.IMS_PER_BATCH", "6"), 4)
    import train_net

    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH is 0"):
        train_net.Trainer(small_cfg("SOLVER.IMS_PER_BATCH", "0"))


# --------------------------------------------------------------------------- annotations without a mask


@pytest.fixture(scope="module")
def broken_coco(tmp_path_factory, synthetic_root):
    """Five images of the synthetic val set with masks broken: [], a 2-point polygon, a zero-area polygon,
    an empty RLE; image 0 keeps none of its objects."""
    from detectron2.data.datasets import register_coco_instances

    src = os.path.join(synthetic_root, "synthetic_coco", "annotations", "instances_val.json")
    data = json.load(open(src))
    data["images"] = data["images"][:5]
    kept = {i["id"] for i in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    first = data["images"][0]["id"]
    anns = data["annotations"]
    h, w = data["images"][0]["height"], data["images"][0]["width"]
    broken = {}
    for a in anns:
        if a["image_id"] == first:
            a["segmentation"] = []
            broken[a["id"]] = "missing or empty segmentation"
    rest = [a for a in anns if a["image_id"] != first]
    rest[0]["segmentation"] = []
    rest[1]["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]  # < 3 points: detectron2's loader drops it
    rest[2]["segmentation"] = [[2.0, 2.0, 10.0, 10.0, 20.0, 20.0]]  # collinear: zero area
    rest[3]["segmentation"] = {"size": [h, w], "counts": [h * w]}  # uncompressed RLE, all zero
    path = tmp_path_factory.mktemp("broken") / "broken.json"
    path.write_text(json.dumps(data))
    name = "test_bad_input_broken_masks"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(path), os.path.join(synthetic_root, "synthetic_coco", "val"))
    # dropped by MobileInst (the 2-point one by detectron2's loader), of which empty
    return name, data, first, len(broken) + 3, len(broken) + 1


def test_annotations_without_a_mask_are_dropped_with_one_warning(broken_coco, caplog):
    from mobileinst.data import get_train_dataset_dicts

    name, data, first, n, n_empty = broken_coco
    with caplog.at_level(logging.WARNING):
        dicts = get_train_dataset_dicts(small_cfg("DATASETS.TRAIN", f"('{name}',)",
                                                  "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "True"))
    msgs = [r.getMessage() for r in caplog.records if "without a usable mask" in r.getMessage()]
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    total = len(data["annotations"]) - 1  # one dropped by detectron2's loader
    assert f"dropped {n} of {total} annotations" in msg
    assert f"missing or empty segmentation: {n_empty}" in msg
    assert "zero-area polygon: 1" in msg and "empty RLE mask: 1" in msg
    first_file = next(i["file_name"] for i in data["images"] if i["id"] == first)
    assert first_file in msg and "annotation #0 of the image" in msg
    assert re.search(r"\d+ images are left without objects", msg)
    # FILTER_EMPTY_ANNOTATIONS True: the emptied image is removed, as detectron2 does
    assert first not in {d["image_id"] for d in dicts}
    assert all(a.get("segmentation") for d in dicts for a in d["annotations"])
    dicts = get_train_dataset_dicts(small_cfg("DATASETS.TRAIN", f"('{name}',)",
                                              "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False"))
    assert next(d for d in dicts if d["image_id"] == first)["annotations"] == []


def test_training_on_annotations_without_a_mask_runs(broken_coco, tmp_path):
    """It crashed with a batch-size ValueError or KeyError: 'segmentation'."""
    from train_net import Trainer

    name, *_ = broken_coco
    # every image in every batch; the emptied image kept (FILTER_EMPTY_ANNOTATIONS False)
    cfg = small_cfg("DATASETS.TRAIN", f"('{name}',)", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "5",
                    "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path))
    Trainer(cfg).train()


@pytest.mark.parametrize("segm,problem", [
    ([], "missing or empty segmentation"),
    (None, "missing or empty segmentation"),
    ([[1.0, 2.0, 3.0, 4.0]], "no polygon with 3 or more points"),
    ([[2.0, 2.0, 10.0, 10.0, 20.0, 20.0]], "zero-area polygon"),
    ([[5.0, 5.0, 5.0, 5.0, 5.0, 5.0]], "zero-area polygon"),
    ({"size": [4, 4], "counts": [16]}, "empty RLE mask"),
    (np.zeros((4, 4), np.uint8), "empty mask array"),
    ([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]], None),
    ([[0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 0.0, 10.0]], None),  # self-intersecting: no signed area, still a mask
    ([[2.0, 2.0, 10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 4.0, 0.0, 0.0, 4.0]], None),  # one usable polygon
    ({"size": [4, 4], "counts": [5, 1, 10]}, None),
])
def test_mask_problem(segm, problem):
    from mobileinst.data import mask_problem

    assert mask_problem(segm, 16, 16) == problem


def test_synthetic_annotations_keep_their_ids(synthetic_root):
    from mobileinst.data import drop_annotations_without_masks

    d = copy.deepcopy(DatasetCatalog.get("test_synthetic_coco_val")[1])
    aid = d["annotations"][0]["id"]
    d["annotations"][0]["segmentation"] = []
    out = drop_annotations_without_masks([d], "x")
    assert len(out[0]["annotations"]) == len(d["annotations"]) - 1
    assert aid not in [a["id"] for a in out[0]["annotations"]]
    assert d["annotations"][0]["segmentation"] == []  # the input is not modified


def test_mapper_names_an_annotation_without_segmentation(synthetic_root):
    d = copy.deepcopy(DatasetCatalog.get("test_synthetic_coco_val")[1])
    del d["annotations"][0]["segmentation"]
    aid = d["annotations"][0]["id"]
    with pytest.raises(ValueError, match=rf"{os.path.basename(d['file_name'])}.*annotation id {aid} has no "
                                         "segmentation"):
        MobileInstDatasetMapper(small_cfg(), is_train=True)(d)


def test_ytvis_frames_without_a_mask_are_dropped_and_named(tmp_path, caplog):
    from mobileinst.data.datasets.ytvis import load_ytvis_json

    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0]]
    flat = [[2.0, 2.0, 6.0, 6.0, 10.0, 10.0]]  # zero area
    data = {"videos": [{"id": 1, "width": 16, "height": 16, "length": 3,
                        "file_names": ["v/0.jpg", "v/1.jpg", "v/2.jpg"]}],
            "annotations": [{"id": 7, "video_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentations": [poly, flat, [[1.0, 1.0]]]}],
            "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "v.json"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        dicts = load_ytvis_json(str(path), str(tmp_path))
    assert [len(f) for f in dicts[0]["annotations"]] == [1, 0, 0]
    assert "dropped 2 per-frame annotations" in caplog.text and "zero-area polygon: 1" in caplog.text
    assert "v/1.jpg' annotation id 7 (zero-area polygon)" in caplog.text


# --------------------------------------------------------------------------- frames


BAD_FRAMES = [
    ("float32 [0, 1]", np.random.RandomState(0).rand(64, 64, 3).astype(np.float32), ValueError,
     r".*float32 array of shape \(64, 64, 3\).*uint8.*\[0, 1\].*\* 255"),
    ("float64", np.full((64, 64, 3), 120.0), ValueError, r".*float64.*np.clip"),
    ("uint16", np.full((64, 64, 3), 30000, np.uint16), ValueError, r".*uint16.*16-bit.*// 257"),
    ("zero height", np.zeros((0, 64, 3), np.uint8), ValueError, r".*\(0, 64, 3\), which is empty"),
    ("gray", np.zeros((64, 64), np.uint8), ValueError, r".*\(64, 64\).*GRAY2BGR"),
    ("bgra", np.zeros((64, 64, 4), np.uint8), ValueError, r".*BGRA2BGR"),
    ("chw", np.zeros((3, 64, 64), np.uint8), ValueError, r".*transpose\(1, 2, 0\)"),
    ("none", None, TypeError, r"None; expected .*cv2.imread returns None"),
    ("tensor", torch.zeros(3, 64, 64, dtype=torch.uint8), TypeError, r".*torch.Tensor.*permute"),
]


@pytest.fixture(scope="module")
def predictors(weights):
    from mobileinst.predictor import MobileInstPredictor
    from mobileinst.video import StreamingPredictor

    cfg = small_cfg("MODEL.WEIGHTS", weights["good.pth"])
    return StreamingPredictor(cfg), MobileInstPredictor(cfg)


@pytest.mark.parametrize("kind,frame,error,match", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_get_a_clear_error(predictors, kind, frame, error, match):
    """StreamingPredictor took a float32 frame in [0, 1] silently (different masks);
    float64, uint16 and zero-height frames failed with internal errors."""
    stream, image = predictors
    stream.reset()
    with pytest.raises(error, match="Frame 0 is " + match):
        stream(frame)
    with pytest.raises(error, match="Image is " + match):
        image(frame)


def test_a_bad_frame_mid_stream_names_its_index(predictors):
    stream, _ = predictors
    stream.reset()
    stream(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"Frame 1 is a float32 array"):
        stream(np.zeros((64, 64, 3), np.float32))
    assert len(stream(np.zeros((64, 64, 3), np.uint8))) >= 0  # the stream goes on


def test_runtime_refuses_bad_frames():
    """The ONNX Runtime segmenters check frames before running a graph."""
    from mobileinst_runtime.segmenter import ImageSegmenter, VideoSegmenter

    video = VideoSegmenter.__new__(VideoSegmenter)  # the check comes before any graph is used
    video.frame_index = 4
    image = ImageSegmenter.__new__(ImageSegmenter)
    for _, frame, error, match in BAD_FRAMES:
        with pytest.raises(error, match="Frame 4 is " + match):
            video.step(frame)
        with pytest.raises(error, match="Image is " + match):
            image(frame)


# --------------------------------------------------------------------------- output folders


def _video_dir(root):
    d = os.path.join(root, "synthetic_ytvis", "val", "JPEGImages")
    return os.path.join(d, sorted(os.listdir(d))[0])


def test_demo_checks_input_and_weights_before_creating_the_output(weights, tmp_path, synthetic_root):
    import demo

    out = tmp_path / "out"
    cfg = small_cfg("MODEL.WEIGHTS", weights["good.pth"])
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        demo.run(cfg, str(tmp_path / "nope.mp4"), str(out))
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS.*missing\.pth"):
        demo.run(small_cfg("MODEL.WEIGHTS", str(tmp_path / "missing.pth")), _video_dir(synthetic_root), str(out))
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="holds no frames"):
        (tmp_path / "empty").mkdir()
        demo.run(cfg, str(tmp_path / "empty"), str(out))
    assert not out.exists()
    with pytest.raises(SystemExit):  # argparse: --input is required
        demo.main(["--config-file", SYNTH_CONFIG, "--output", str(out)])
    assert not out.exists()


def test_demo_checks_the_output_before_the_first_frame(weights, tmp_path, synthetic_root, monkeypatch):
    import demo

    from mobileinst_core.frames import FrameSource

    read = []

    class Frames(FrameSource):  # the demo's frame source, recording each frame read
        def __iter__(self):
            for item in super().__iter__():
                read.append(item[0])
                yield item

    monkeypatch.setattr(demo, "iter_frames", Frames)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = small_cfg("MODEL.WEIGHTS", weights["good.pth"])
    with pytest.raises(OSError, match=r"Cannot write to output folder '.*a_file/out'"):
        demo.run(cfg, _video_dir(synthetic_root), str(blocker / "out"))
    assert read == []  # no frame was read
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match="Cannot write to output folder"):
                demo.run(cfg, _video_dir(synthetic_root), str(locked))
        finally:
            locked.chmod(0o700)
        assert read == []


def test_export_checks_weights_and_calibration_before_creating_the_output(weights, tmp_path, synthetic_root):
    from mobileinst.export import export

    out = tmp_path / "export"
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS.*missing\.pth"):
        export(small_cfg("MODEL.WEIGHTS", str(tmp_path / "missing.pth")), str(out), 64, 64)
    assert not out.exists()
    cfg = small_cfg("MODEL.WEIGHTS", weights["good.pth"])
    with pytest.raises(FileNotFoundError, match="--calib-dir"):
        export(cfg, str(out), 64, 64, do_quantize=True, calib_dir=str(tmp_path / "no_images"))
    with pytest.raises(ValueError, match="--calib-dir"):
        export(cfg, str(out), 64, 64, do_quantize=True)
    with pytest.raises(ValueError, match="NUM_CLASSES is 6"):
        export(small_cfg("MODEL.MOBILEINST.NUM_CLASSES", "6"), str(out), 64, 64)
    with pytest.raises(ValueError, match="--size 0 64"):
        export(cfg, str(out), 0, 64)
    assert not out.exists()


def test_runtime_checks_the_input_before_creating_the_output(tmp_path):
    from mobileinst_runtime.__main__ import run

    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        run(str(tmp_path / "model"), str(tmp_path / "nope.mp4"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_frame_failing_mid_stream_leaves_no_output(weights, tmp_path):
    import demo

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, size in enumerate([(64, 64), (48, 80)]):
        cv2.imwrite(str(mixed / f"{i:05d}.jpg"), np.full(size + (3,), 120, np.uint8))
    out = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="Frame 1"):
        demo.run(small_cfg("MODEL.WEIGHTS", weights["good.pth"]), str(mixed), str(out))
    assert not (tmp_path / "a").exists()
