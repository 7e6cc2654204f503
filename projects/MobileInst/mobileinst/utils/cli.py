# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Command lines with trailing detectron2 config overrides, flags anywhere.

Every tool takes its ``--flags`` and, like Detectron2's ``train_net.py``,
trailing ``KEY VALUE`` config overrides (``args.opts``). argparse's
``REMAINDER`` takes everything after the first override as overrides, so a
flag written after them (``... MODEL.WEIGHTS w.pth --quantize``) used to end
in detectron2's "Override list has odd length". :func:`parse_with_overrides`
pulls the parser's own flags out of the overrides wherever they stand, then
checks that what is left is KEY VALUE pairs, naming the first bad token::

    parser = config_argument_parser(description=__doc__)
    parser.add_argument("--config-file", required=True)
    args = parse_with_overrides(parser, argv)   # args.opts: ["KEY", "VALUE", ...]

A token right after a KEY is its value, even a negative number or an
unknown ``-x``; only the parser's own flags are taken out. ``--`` ends the
flags: everything after it is overrides.
"""
import argparse
import re
import sys
from typing import List, Optional, Sequence, Tuple

__all__ = ["CONFIG_KEY", "config_argument_parser", "describe_overrides", "parse_with_overrides", "split_overrides"]

# A detectron2 config key: upper-case names joined by dots (SEED, MODEL.WEIGHTS, ...).
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+([eE][-+]?\d+)?$|^-\d+[eE][-+]?\d+$")

OPTS_HELP = ("config overrides KEY VALUE ... (e.g. MODEL.WEIGHTS model_final.pth); "
             "the --flags may stand before, between or after them")


def config_argument_parser(opts_help: str = OPTS_HELP, **kwargs) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` (``kwargs`` as for it; raw description by default)
    with the trailing positional ``opts``: the config overrides. Parse it with
    :func:`parse_with_overrides`."""
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    parser = argparse.ArgumentParser(**kwargs)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help=opts_help)
    return parser


def describe_overrides(parser: argparse.ArgumentParser, opts_help: str = OPTS_HELP) -> argparse.ArgumentParser:
    """Set the ``--help`` text of an existing parser's ``opts`` (e.g.
    detectron2's ``default_argument_parser``, whose text says the overrides
    come at the end) to ``opts_help``; returns the parser."""
    for action in parser._actions:
        if action.dest == "opts":
            action.help = opts_help
    return parser


def _is_flag(token: str) -> bool:
    """Looks like an option (``-x``, ``--name``), not a negative number."""
    return token.startswith("-") and len(token) > 1 and not _NUMBER.match(token)


def _find_action(parser: argparse.ArgumentParser, token: str) -> Optional[Tuple[argparse.Action, str, bool]]:
    """The parser's action for ``token`` (``--name``, ``--name=value`` or a
    unique prefix of a long option, as argparse allows): (action, the option
    string, whether the value is attached); None when it is not one of its flags."""
    options = {s: a for a in parser._actions for s in a.option_strings}
    name, attached = token, False
    if token.startswith("--") and "=" in token:
        name, attached = token.split("=", 1)[0], True
    if name in options:
        return options[name], name, attached
    if name.startswith("--") and parser.allow_abbrev:
        matches = [s for s in options if s.startswith(name)]
        if len(matches) == 1:
            return options[matches[0]], matches[0], attached
        if len(matches) > 1:
            parser.error(f"ambiguous option {name}: could match {', '.join(sorted(matches))}")
    return None


def _looks_like_boundary(parser, token: str) -> bool:
    """Where a variable-length flag's values end: another flag, a config key or ``--``."""
    return token == "--" or (_is_flag(token) and _find_action(parser, token) is not None) \
        or bool(CONFIG_KEY.match(token))


def split_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split ``argv`` into (the parser's flags with their values, the config
    overrides), keeping the order within each. Fails (``parser.error``: usage,
    message, exit status 2) on an unknown flag or when the overrides are not
    KEY VALUE pairs, naming the token."""
    flags, opts = [], []
    i, n = 0, len(argv)
    while i < n:
        tok = argv[i]
        if tok == "--":
            opts.extend(argv[i + 1:])
            break
        expects_value = len(opts) % 2 == 1  # the previous override token was a KEY
        found = _find_action(parser, tok) if _is_flag(tok) else None
        if found is None:
            if _is_flag(tok) and not expects_value:
                parser.error(f"unrecognized argument {tok!r}: not a flag of this command "
                             f"(see --help), and config overrides are KEY VALUE pairs")
            opts.append(tok)
            i += 1
            continue
        action, _, attached = found
        flags.append(tok)
        i += 1
        if attached:
            continue
        nargs = action.nargs
        if nargs is None:  # one value, taken as it is (--name=value keeps a "-..." value a value)
            if i < n:
                if tok.startswith("--"):
                    flags[-1] = f"{tok}={argv[i]}"
                else:
                    flags.append(argv[i])
                i += 1
        elif isinstance(nargs, int):
            flags.extend(argv[i:i + nargs])
            i += nargs
        elif nargs == argparse.OPTIONAL:
            if i < n and not _looks_like_boundary(parser, argv[i]):
                flags.append(argv[i])
                i += 1
        elif nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE):
            while i < n and not _looks_like_boundary(parser, argv[i]):
                flags.append(argv[i])
                i += 1
        else:  # REMAINDER or PARSER on an option: leave the rest to argparse
            flags.extend(argv[i:])
            break
    _check_pairs(parser, opts)
    return flags, opts


def _check_pairs(parser: argparse.ArgumentParser, opts: List[str]) -> None:
    for k in range(0, len(opts), 2):
        key = opts[k]
        if not CONFIG_KEY.match(key):
            after = f" after {opts[k - 2]} {opts[k - 1]}" if k >= 2 else ""
            parser.error(f"config overrides are KEY VALUE pairs, but {key!r}{after} is not a config key "
                         f"(keys look like MODEL.WEIGHTS); a flag's value, or a value too many?")
        if k + 1 >= len(opts):
            parser.error(f"config override {key!r} has no value (overrides are KEY VALUE pairs)")


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
                         ) -> argparse.Namespace:
    """``parser.parse_args`` with the parser's flags taken from anywhere in
    ``argv`` (default ``sys.argv[1:]``) and the rest, checked to be KEY VALUE
    pairs, in ``args.opts``. The parser's only positional must be ``opts``
    (``config_argument_parser``, or detectron2's ``default_argument_parser``)."""
    positionals = [a.dest for a in parser._actions if not a.option_strings]
    if positionals != ["opts"]:
        raise ValueError(f"parse_with_overrides needs a parser whose only positional is 'opts', got {positionals}")
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, opts = split_overrides(parser, argv)
    args = parser.parse_args(flags)
    args.opts = opts
    return args
