"""`fastdiss-options`: the plugin's own command-line options, with their defaults and help.

fairseq 0.12's `--help` cannot show them: fairseq-train and fairseq-generate parse the command
line once to learn the task, criterion and model, and only then add their options, but `--help`
already exits in that first parse. This prints what the second parse would add: the options of
task `fastdiss_translation` beyond fairseq's `translation` task, of criterion `fastdiss_loss`,
and of model `fastdiss_transformer` beyond fairseq's `transformer`.
"""

import argparse
import sys

SECTIONS = (
    "task fastdiss_translation (fairseq-train, fairseq-generate, fairseq-interactive)",
    "criterion fastdiss_loss (fairseq-train)",
    "model fastdiss_transformer (fairseq-train; stored in the checkpoint)",
)


def _dataclass_parser(config_class) -> argparse.ArgumentParser:
    from fairseq.dataclass.utils import gen_parser_from_dataclass

    parser = argparse.ArgumentParser(add_help=False)
    gen_parser_from_dataclass(parser, config_class())
    return parser


def _model_parser(model_class) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    model_class.add_args(parser)
    return parser


def _own_actions(parser: argparse.ArgumentParser, inherited: argparse.ArgumentParser):
    """The actions of parser that inherited does not have, less fairseq's interpolated fields
    (e.g. the task's seed, which is --seed of fairseq's common options)."""
    known = {action.dest for action in inherited._actions}
    return [action for action in parser._actions
            if action.dest not in known
            and not (isinstance(action.default, str) and action.default.startswith("${"))]


def options_parser() -> argparse.ArgumentParser:
    from fairseq.models.transformer import TransformerModel
    from fairseq.tasks.translation import TranslationConfig

    from fastdiss_fairseq.criterions.fastdiss_loss import FastDiSSLossConfig
    from fastdiss_fairseq.models.fastdiss_transformer import FastDiSSTransformerModel
    from fastdiss_fairseq.tasks.fastdiss_translation import FastDiSSTranslationConfig

    parser = argparse.ArgumentParser(
        prog="fastdiss-options", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="Pass them to the stock CLIs with --user-dir; fairseq's own options: fairseq-train --help.",
    )
    empty = argparse.ArgumentParser(add_help=False)
    sources = (
        (_dataclass_parser(FastDiSSTranslationConfig), _dataclass_parser(TranslationConfig)),
        (_dataclass_parser(FastDiSSLossConfig), empty),
        (_model_parser(FastDiSSTransformerModel), _model_parser(TransformerModel)),
    )
    for title, (own, inherited) in zip(SECTIONS, sources):
        group = parser.add_argument_group(title)
        for action in _own_actions(own, inherited):
            # help texts hold literal % signs ("10 %"), which argparse would read as formats
            action.help = (action.help or "").replace("%", "%%")
            shown = action.default not in (None, argparse.SUPPRESS) and action.default is not False
            if shown and "(default" not in action.help:
                action.help += " (default: %(default)s)"
            group._add_action(action)  # what argparse's parents= does, one group per section
    return parser


def main(argv=None) -> None:
    options_parser().parse_args(["--help"] if argv is None and len(sys.argv) == 1 else argv)


if __name__ == "__main__":
    main()
