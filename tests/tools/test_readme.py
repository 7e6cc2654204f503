"""The README's commands run as written, and every repository path it names exists.

The shell commands of the README's code blocks are read from the README.
Those that run on the synthetic data run for real, on a tiny synthetic set,
with tiny schedules appended as flags or config overrides (which exercises
the flags-after-overrides command lines too); ``make demo``, ``make
benchmark`` and ``make test`` are checked against their Makefile recipe and
``make demo`` / ``make benchmark`` run it. Commands that need COCO, LVIS,
YouTube-VIS or a timing run are checked as far as possible without them:
their flags parse with the tool's own parser and their config file merges
with ``add_mobileinst_config``. The python blocks run too.

All real runs share one child process (one import of torch and detectron2),
in a scratch folder that links the repository's code and holds the data.
"""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
PYTHON = (".venv/bin/python", "python")

# What the real runs append (flags and overrides after the README's own, as a user may write them).
TINY = {
    "tools/quickstart.py": ["--max-iter", "1", "--video-max-iter", "1", "--processes", "1",
                            "SOLVER.IMS_PER_BATCH", "2", "--video-opt", "SOLVER.IMS_PER_BATCH", "2"],
    "train_net.py": ["SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "--num-gpus", "1"],
    "tools/export.py": ["--no-torchscript"],
    "tools/benchmark.py": ["--short-side", "64", "--max-size", "96", "--runs", "1", "--warmup", "0",
                           "--no-maskrcnn", "--output", "output/benchmark/tiny.json"],
}
REAL_DATA_CONFIGS = ("configs/coco/", "configs/lvis/", "configs/youtubevis/")


def readme_blocks():
    """(language, text) of each fenced code block of the README."""
    return re.findall(r"^```(\w*)\n(.*?)^```", open(README).read(), flags=re.S | re.M)


def shell_commands():
    """The README's shell commands, token lists, in order (continuations joined, comments dropped)."""
    cmds = []
    for lang, text in readme_blocks():
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in text.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                cmds.append(tokens)
    return cmds


def makefile_recipe(target):
    """The recipe lines of a Makefile target, with $(PY) as python."""
    lines = open(os.path.join(ROOT, "Makefile")).read().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^{target}\s*:", ln))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip().replace("$(PY)", "python"))
    return recipe


def plan():
    """[(kind, tokens)]: "run" (run for real, tiny), "parse" (flags and config only), "check" (done here)."""
    out = []
    for tokens in shell_commands():
        if tokens[0] == "export":
            assert all(re.match(r"^\w+=", t) for t in tokens[1:]), tokens
            continue
        if tokens[0] == "make":
            assert len(tokens) == 2, tokens
            recipe = makefile_recipe(tokens[1])
            if tokens[1] == "test":
                assert any(re.search(r"-m pytest .*\btests\b", r) for r in recipe), recipe
                continue
            assert tokens[1] in ("demo", "benchmark"), f"README runs an unknown make target: {tokens}"
            [line] = [r for r in recipe if r.startswith("python ")]
            out.append(("run", shlex.split(line)))
            continue
        assert tokens[0] in PYTHON, f"README command with an unknown program: {tokens}"
        real_data = any(t.startswith(REAL_DATA_CONFIGS) for t in tokens)
        timing = tokens[1] == "tools/benchmark.py"
        out.append(("parse" if real_data or timing else "run", tokens))
    return out


def _script_parser(script):
    """The parser a tool's command line goes through."""
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]
    if script == "train_net.py":
        import train_net

        return train_net.argument_parser()
    import benchmark

    assert script == "tools/benchmark.py", script
    return benchmark.argument_parser()


def test_readme_is_a_short_user_document_that_cites_the_paper():
    text = open(README).read()
    assert len(text.splitlines()) <= 180
    assert "arXiv:2303.17594" in text and "MobileInst: Video Instance Segmentation on the Mobile" in text
    assert "make demo" in text and "make test" in text
    assert not re.search(r"\b\d{3} tests\b", text), "the test count changes every commit"


def test_every_repository_path_the_readme_names_exists():
    text = open(README).read()
    candidates = set(re.findall(r"`([^`\s]+)`", text)) | set(re.findall(r"\]\(([^)\s]+)\)", text))
    for tokens in shell_commands():
        candidates |= set(tokens)
    pattern = re.compile(r"^(configs|tools|projects|docs|tests|datasets|scripts)/|^(train_net|demo|setup)\.py$|"
                         r"^(Makefile|requirements\.txt)$")
    checked = 0
    for path in sorted(candidates):
        if not pattern.match(path) or path.startswith(("datasets/synthetic_", "output/")):
            continue  # what make demo writes is checked by running the commands
        assert glob.glob(os.path.join(ROOT, path)), f"README names {path}, which is not in the repository"
        checked += 1
    assert checked >= 10


def test_commands_that_need_real_data_parse_and_their_configs_merge():
    from detectron2.config import get_cfg

    from mobileinst import add_mobileinst_config
    from mobileinst.utils.cli import parse_with_overrides

    parsed = [tokens for kind, tokens in plan() if kind == "parse"]
    assert len(parsed) >= 5
    for tokens in parsed:
        args = parse_with_overrides(_script_parser(tokens[1]), tokens[2:])
        cfg = get_cfg()
        add_mobileinst_config(cfg)
        cfg.merge_from_file(os.path.join(ROOT, args.config_file))
        cfg.merge_from_list(args.opts)


def test_synthetic_commands_run_as_written(tmp_path):
    runs = [tokens for kind, tokens in plan() if kind == "run"]
    scripts = [t[1] if t[1] != "-m" else t[2] for t in runs]
    for needed in ("tools/quickstart.py", "train_net.py", "demo.py", "tools/export.py", "mobileinst_runtime"):
        assert needed in scripts, f"the README no longer runs {needed}"
    work = tmp_path / "work"
    work.mkdir()
    for name in ("configs", "tools", "projects", "train_net.py", "demo.py"):
        os.symlink(os.path.join(ROOT, name), work / name)
    commands = [t[1:] + TINY.get(t[1], []) for t in runs]
    python_blocks = [text for lang, text in readme_blocks() if lang == "python"]
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"commands": commands, "python": python_blocks}))
    # the repository first, then whatever this process was given (packages installed outside the venv)
    env = dict(os.environ, DETECTRON2_DATASETS=str(work / "datasets"),
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "projects", "MobileInst"), ROOT,
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(job)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith("README command ok: ")]
    assert len(done) == len(commands) + len(python_blocks), proc.stdout[-3000:]
    metrics = json.loads((work / "output" / "quickstart" / "metrics.json").read_text())
    assert "segm" in metrics["coco"] and "AP" in metrics["ytvis"]
    assert (work / "output" / "runtime").is_dir() and (work / "output" / "export" / "image_int8.onnx").exists()
    assert (work / "output" / "export" / "keyframe.ncnn.param").exists()  # --ncnn, run by --backend ncnn


def _run_job(job_path):
    """In the child: tiny synthetic data, then each command through its script's ``__main__``."""
    import runpy

    from mobileinst.data.synthetic import generate_all

    job = json.loads(open(job_path).read())
    generate_all(os.environ["DETECTRON2_DATASETS"], seed=0, num_train_images=8, num_val_images=4,
                 num_train_videos=2, num_val_videos=2, image_size=(128, 128), num_frames=6,
                 showcase_size=(96, 128), showcase_frames=10)
    for text in job["python"]:
        exec(compile(text, "README.md", "exec"), {"__name__": "readme"})
        print("README command ok: python block", flush=True)
    for argv in job["commands"]:
        print("README command:", shlex.join(argv), flush=True)
        saved = list(sys.argv)
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1]] + argv[2:]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(argv)
                # as `python tools/x.py` does: the script's folder first on sys.path (tools/machine.py)
                sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        finally:
            sys.argv = saved
        print("README command ok:", shlex.join(argv), flush=True)


if __name__ == "__main__":
    _run_job(sys.argv[1])
