"""train_net.py across machines: two processes on this one act as two machines
(``--num-machines 2 --machine-rank 0/1``, a loopback ``--dist-url``, gloo on the CPU).

Each "machine" runs the command a user runs; a probe hook, installed in every
Python process of the run through a ``sitecustomize`` on PYTHONPATH (so the
processes detectron2's launch spawns get it too), writes per rank the
iteration, a hash of every parameter after each step and the images the
rank's model saw. The test then compares the ranks' own records: the same
iterations, equal weights after each step (weights that change), different
images; one checkpoint, written by rank 0; ``--resume`` starts both ranks from
it; the evaluation's results come out once, on rank 0.
"""
import json
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SITECUSTOMIZE = (
    "import os, sys\n"
    "if os.environ.get('REPLICA_PROBE_DIR'):\n"
    f"    sys.path.insert(0, {HERE!r})\n"
    "    import test_multi_machine\n"
    "    test_multi_machine.install_probe(os.environ['REPLICA_PROBE_DIR'])\n"
)


def install_probe(out_dir):
    """Append :class:`ReplicaProbe` to the stock trainer's hooks (after the checkpointer
    and the evaluation), in this process."""
    import hashlib

    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.utils import comm

    class ReplicaProbe(HookBase):
        def _fingerprint(self):
            model = getattr(self.trainer.model, "module", self.trainer.model)
            h = hashlib.sha256()
            for name, p in model.named_parameters():
                h.update(name.encode())
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
            return h.hexdigest()

        def _write(self, **record):
            with open(os.path.join(out_dir, f"probe.rank{comm.get_rank()}.jsonl"), "a") as f:
                f.write(json.dumps(dict(record, world_size=comm.get_world_size())) + "\n")

        def before_train(self):
            self.seen = []
            model = getattr(self.trainer.model, "module", self.trainer.model)
            model.register_forward_pre_hook(lambda m, args: self.seen.extend(x["file_name"] for x in args[0]))
            self._write(event="start", iter=self.trainer.start_iter, weights=self._fingerprint())

        def after_step(self):
            self._write(event="step", iter=self.trainer.iter, weights=self._fingerprint(), images=self.seen)
            self.seen = []

    build_hooks = DefaultTrainer.build_hooks
    DefaultTrainer.build_hooks = lambda self: build_hooks(self) + [ReplicaProbe()]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(args, data_root, probe_dir, timeout=150):
    """Run ``train_net.py args`` as machine 0 and machine 1 at once; return their logs."""
    hooks = probe_dir / "site"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, DETECTRON2_DATASETS=data_root, OMP_NUM_THREADS="1", REPLICA_PROBE_DIR=str(probe_dir),
               PYTHONPATH=os.pathsep.join([str(hooks), os.path.join(ROOT, "projects", "MobileInst"), ROOT,
                                           os.environ.get("PYTHONPATH", "")]))
    url = f"tcp://127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "train_net.py")] + args
                              + ["--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(r), "--dist-url", url],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"machine {r}:\n" + log[-6000:]
    return logs


def _records(probe_dir, rank):
    with open(probe_dir / f"probe.rank{rank}.jsonl") as f:
        return [json.loads(line) for line in f]


def _check_lockstep(probe_dir, first_iter, last_iter, images_per_rank):
    """Both ranks' records: one start then a step per iteration, equal weights at each."""
    r0, r1 = _records(probe_dir, 0), _records(probe_dir, 1)
    for recs in (r0, r1):
        assert [r["event"] for r in recs] == ["start"] + ["step"] * (last_iter - first_iter + 1)
        assert [r["iter"] for r in recs] == [first_iter] + list(range(first_iter, last_iter + 1))
        assert all(r["world_size"] == 2 for r in recs)
    for a, b in zip(r0, r1):
        assert a["weights"] == b["weights"], f"ranks differ after iteration {a['iter']} ({a['event']})"
    weights = [r["weights"] for r in r0]
    assert len(set(weights)) == len(weights), "a step left the weights as they were"
    for a, b in zip(r0[1:], r1[1:]):  # each rank trained on its own share of the batch
        assert len(a["images"]) == len(b["images"]) == images_per_rank
        assert not set(a["images"]) & set(b["images"]), a["images"]
    return r0


def test_two_machines_train_in_lockstep_resume_and_evaluate_once(synthetic_root, tmp_path):
    from test_train_net import SMALL

    from conftest import SYNTH_CONFIG

    out = tmp_path / "run"
    args = ["--config-file", SYNTH_CONFIG, "OUTPUT_DIR", str(out)] + SMALL
    probe = tmp_path / "probe1"
    probe.mkdir()
    logs = _two_machines(args + ["SOLVER.MAX_ITER", "3"], synthetic_root, probe)
    first = _check_lockstep(probe, 0, 2, images_per_rank=2)

    # one checkpoint, written by machine 0 (the output folder is shared, as detectron2 expects)
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_final.pth"]
    log0, log1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert log0.count("Saving checkpoint to") == 1 and "Saving checkpoint to" not in log1
    # evaluation: both ranks run inference on their shares, the results come out once, on rank 0
    assert "Start inference on" in log0 and "Start inference on" in log1
    assert log0.count("copypaste: Task: segm") == 1 and "copypaste: Task: segm" not in log1
    assert "copypaste: Task: segm" in logs[0] and "copypaste: Task: segm" not in logs[1]

    # --resume: both machines start at iteration 3 from model_final's weights, in lockstep again
    probe = tmp_path / "probe2"
    probe.mkdir()
    _two_machines(args + ["--resume", "SOLVER.MAX_ITER", "5"], synthetic_root, probe)
    resumed = _check_lockstep(probe, 3, 4, images_per_rank=2)
    assert resumed[0]["weights"] == first[-1]["weights"]
    assert (out / "log.txt").read_text().count("copypaste: Task: segm") == 2
