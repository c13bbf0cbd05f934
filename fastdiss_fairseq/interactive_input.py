"""fairseq-interactive input that is not UTF-8: replaced with a warning, never a traceback.

fairseq-interactive reads its input with fileinput: a file (--input) is decoded strictly as
UTF-8 and stdin with the locale's error handler (strict under most locales), so one stray
Latin-1 byte ends the whole session with a UnicodeDecodeError traceback. When the plugin is
loaded inside fairseq-interactive, its `buffered_read` is replaced by the one below, which
reads bytes and decodes each line as UTF-8 with errors="replace": undecodable bytes become
U+FFFD, which the dictionary maps to <unk>, and a warning names the line. Everything else
(stripping, buffering) is as in fairseq.
"""

import logging
import sys

logger = logging.getLogger(__name__)

INTERACTIVE_MODULE = "fairseq_cli.interactive"


def decode_line(raw: bytes, line_number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        logger.warning(
            "fastdiss: input line %d is not valid UTF-8 (%s); its undecodable bytes are replaced by U+FFFD (<unk>)",
            line_number, e.reason,
        )
        return raw.decode("utf-8", errors="replace")


def buffered_read(input, buffer_size):
    buffer = []
    stdin = getattr(sys.stdin, "buffer", sys.stdin)  # a replaced sys.stdin may be text only
    stream = stdin if input == "-" else open(input, "rb")
    try:
        for line_number, raw in enumerate(stream, 1):
            line = raw if isinstance(raw, str) else decode_line(raw, line_number)
            buffer.append(line.strip())
            if len(buffer) >= buffer_size:
                yield buffer
                buffer = []
    finally:
        if stream is not stdin:
            stream.close()
    if buffer:
        yield buffer


def _interactive_modules():
    for name in (INTERACTIVE_MODULE, "__main__"):  # `fairseq-interactive` / `python -m fairseq_cli.interactive`
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is not None and INTERACTIVE_MODULE in (module.__name__, getattr(spec, "name", None)):
            yield module


def install() -> None:
    """Called when the plugin is imported; a no-op outside fairseq-interactive."""
    for module in _interactive_modules():
        if hasattr(module, "buffered_read"):
            module.buffered_read = buffered_read
