"""mobileinst.utils.cli: the tools' --flags before, between or after the trailing KEY VALUE overrides."""
import argparse

import pytest

from mobileinst.utils.cli import config_argument_parser, describe_overrides, parse_with_overrides


def _parser():
    p = config_argument_parser(description="test")
    p.add_argument("--config-file", default="")
    p.add_argument("--quantize", action="store_true")
    p.add_argument("--calib-dir", default=None)
    p.add_argument("--size", type=int, nargs=2, default=None)
    p.add_argument("--strides", type=int, nargs="+", default=[8])
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--video-opt", nargs=2, action="append", default=[])
    return p


def _parse(argv):
    return parse_with_overrides(_parser(), argv)


def test_flags_before_after_and_between_the_overrides_give_the_same_args():
    overrides = ["MODEL.WEIGHTS", "w.pth", "SOLVER.BASE_LR", "0.01"]
    flags = ["--config-file", "c.yaml", "--size", "256", "256", "--quantize", "--calib-dir", "images"]
    before = _parse(flags + overrides)
    after = _parse(overrides + flags)
    between = _parse(overrides[:2] + flags[:5] + overrides[2:] + flags[5:])
    for args in (before, after, between):
        assert args.opts == overrides
        assert args.config_file == "c.yaml" and args.size == [256, 256]
        assert args.quantize and args.calib_dir == "images"


def test_the_readme_export_order():
    """The user's report: flags after the overrides were taken as overrides ("Override list has odd length")."""
    args = _parse(["--config-file", "c.yaml", "--size", "256", "256", "MODEL.WEIGHTS", "w.pth",
                   "--quantize", "--calib-dir", "datasets/synthetic_coco/val"])
    assert args.opts == ["MODEL.WEIGHTS", "w.pth"]
    assert args.quantize and args.calib_dir == "datasets/synthetic_coco/val"


def test_variable_length_flag_stops_at_a_config_key_or_a_flag():
    args = _parse(["--strides", "8", "4", "MODEL.X", "1", "--strides", "2", "--quantize"])
    assert args.strides == [2] and args.opts == ["MODEL.X", "1"] and args.quantize
    args = _parse(["--strides", "8", "4", "--quantize", "MODEL.X", "1"])
    assert args.strides == [8, 4] and args.opts == ["MODEL.X", "1"]


def test_negative_numbers_stay_values():
    args = _parse(["MODEL.PIXEL_MEAN", "-1.5", "--threshold", "-0.25", "SOLVER.X", "-3", "--size", "-1", "5",
                   "SEED", "-1e3"])
    assert args.opts == ["MODEL.PIXEL_MEAN", "-1.5", "SOLVER.X", "-3", "SEED", "-1e3"]
    assert args.threshold == -0.25 and args.size == [-1, 5]


def test_a_flag_value_that_looks_like_a_flag_or_key():
    args = _parse(["--video-opt", "SOLVER.IMS_PER_BATCH", "8", "SOLVER.IMS_PER_BATCH", "16",
                   "--calib-dir", "-odd-name", "--video-opt", "SOLVER.BASE_LR", "0.1"])
    assert args.video_opt == [["SOLVER.IMS_PER_BATCH", "8"], ["SOLVER.BASE_LR", "0.1"]]
    assert args.opts == ["SOLVER.IMS_PER_BATCH", "16"] and args.calib_dir == "-odd-name"


def test_equals_form_abbreviations_and_double_dash():
    args = _parse(["--calib-dir=x", "--config", "c.yaml", "--", "MODEL.WEIGHTS", "--quantize"])
    assert args.calib_dir == "x" and args.config_file == "c.yaml"
    assert args.opts == ["MODEL.WEIGHTS", "--quantize"] and not args.quantize


@pytest.mark.parametrize("argv, named", [
    (["MODEL.WEIGHTS", "w.pth", "extra"], "'extra' after MODEL.WEIGHTS w.pth is not a config key"),
    (["MODEL.WEIGHTS"], "'MODEL.WEIGHTS' has no value"),
    (["--quantize", "MODEL.WEIGHTS", "w.pth", "SOLVER.BASE_LR"], "'SOLVER.BASE_LR' has no value"),
    (["model.weights", "w.pth"], "'model.weights' is not a config key"),
    (["--bogus", "MODEL.WEIGHTS", "w.pth"], "unrecognized argument '--bogus'"),
    (["MODEL.WEIGHTS", "w.pth", "--bogus"], "unrecognized argument '--bogus'"),
])
def test_bad_tokens_are_named(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2
    assert named in capsys.readouterr().err


def test_argparse_still_checks_the_flags(capsys):
    with pytest.raises(SystemExit):
        _parse(["MODEL.WEIGHTS", "w.pth", "--threshold", "high"])
    assert "--threshold" in capsys.readouterr().err


def test_needs_opts_as_the_only_positional():
    p = argparse.ArgumentParser()
    p.add_argument("json")
    with pytest.raises(ValueError, match="only positional is 'opts'"):
        parse_with_overrides(p, ["a.json"])


def test_detectron2_default_argument_parser():
    from detectron2.engine import default_argument_parser

    parser = describe_overrides(default_argument_parser())
    args = parse_with_overrides(parser, ["--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth", "--eval-only",
                                         "--num-gpus", "2", "SOLVER.BASE_LR", "-0.1", "--resume"])
    assert args.eval_only and args.resume and args.num_gpus == 2 and args.config_file == "c.yaml"
    assert args.opts == ["MODEL.WEIGHTS", "w.pth", "SOLVER.BASE_LR", "-0.1"]
    assert "before, between or after" in " ".join(parser.format_help().split())


def test_train_net_accepts_flags_after_the_overrides():
    import train_net

    parser = train_net.argument_parser()
    args = parse_with_overrides(parser, ["--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth", "--eval-only"])
    assert args.eval_only and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    assert "before, between or after" in " ".join(parser.format_help().split())
