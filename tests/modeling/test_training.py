"""Training lowers the loss, and the trained model finds the synthetic objects."""
import torch
from conftest import small_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from mobileinst.data import MobileInstDatasetMapper


def _mask_iou(a, b):
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / max(union, 1)


def test_training_lowers_loss_and_finds_objects(synthetic_root):
    torch.manual_seed(0)
    cfg = small_cfg("INPUT.RANDOM_FLIP", "none")
    model = build_model(cfg)
    mapper = MobileInstDatasetMapper(cfg, is_train=True)
    dicts = [d for d in DatasetCatalog.get("test_synthetic_coco_train") if d["annotations"]][:8]
    data = [mapper(d) for d in dicts]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model.train()
    history = []
    for it in range(160):
        batch = data[(it % 2) * 4:(it % 2) * 4 + 4]
        losses = model(batch)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    first, last = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert last < 0.3 * first, f"loss {first:.3f} -> {last:.3f}"

    model.eval()
    found = total = 0
    with torch.no_grad():
        outputs = model([{"image": d["image"]} for d in data])
    for d, out in zip(data, outputs):
        pred = out["instances"]
        pred = pred[pred.scores > 0.3]
        gt = d["instances"]
        for gm, gc in zip(gt.gt_masks.tensor, gt.gt_classes):
            total += 1
            ious = [_mask_iou(pm, gm) for pm, pc in zip(pred.pred_masks, pred.pred_classes) if pc == gc]
            found += bool(ious) and max(ious) >= 0.5
    assert total > 10
    assert found / total >= 0.8, f"found {found} of {total} objects"
