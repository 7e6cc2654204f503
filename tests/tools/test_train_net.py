"""train_net.py with the stock trainer: 2 CPU processes (gloo), --resume, --eval-only."""
import json
import os
import subprocess
import sys

from conftest import ROOT, SYNTH_CONFIG

SMALL = [
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2",
    "SOLVER.STEPS", "(100,)",
]


def _run(args, root, timeout=420):
    env = dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py")] + args, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_two_processes_resume_and_eval_only(synthetic_root, tmp_path):
    out = str(tmp_path / "run")
    base = ["--config-file", SYNTH_CONFIG]
    log = _run(base + ["--num-gpus", "2", "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out] + SMALL, synthetic_root)
    assert "world size: 2" in log.lower() or "rank 1" in log.lower() or os.path.exists(os.path.join(out, "log.txt.rank1"))
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    first_run = max(m["iteration"] for m in metrics)
    assert first_run >= 3

    # --resume continues from the last checkpoint (iteration 4) up to MAX_ITER 6
    log = _run(base + ["--resume", "SOLVER.MAX_ITER", "6", "OUTPUT_DIR", out] + SMALL, synthetic_root)
    assert "Starting training from iteration 4" in log
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert max(m["iteration"] for m in metrics) > first_run

    # --eval-only on the synthetic val set: COCOEvaluator numbers come back
    log = _run(base + ["--eval-only", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                       "OUTPUT_DIR", out] + SMALL, synthetic_root)
    assert "copypaste: Task: segm" in log, log[-3000:]
    assert os.path.exists(os.path.join(out, "inference", "synthetic_coco_val", "coco_instances_results.json"))
