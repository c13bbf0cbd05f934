"""Shared plumbing of the benchmark scripts in this folder (prepare_<benchmark>.py).

Every benchmark script does the same three things, and only the middle one differs:
  1. get the official release: --raw PATH (a folder, searched recursively, or one archive),
     or else download it with urllib into WORK/orig;
  2. reduce the official format (tag files, sgm/xml, jsonl, ...) to the generic layout
     WORK/text/{train,valid,test}.{SRC,TGT}: raw UTF-8 text, one segment per line;
  3. run prepare_parallel.py on that layout (tokenize, BPE, binarize into --out).

Errors in the input are raised as DataError and reported by `reporting()` as one line
("prepare_x: error: ...") through sys.exit, never as a traceback.
"""

import argparse
import contextlib
import fnmatch
import gzip
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_parallel  # noqa: E402  (sibling module, also importable when run as a script)

SPLITS = prepare_parallel.SPLITS
ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".zip")


class DataError(Exception):
    """Missing, malformed or unreachable input; reported to the user as one line."""


@contextlib.contextmanager
def reporting(prog: str):
    """Turn a DataError raised inside the block into a one-line exit message."""
    try:
        yield
    except DataError as e:
        sys.exit(f"{prog}: error: {e}")


# --------------------------------------------------------------------------- command line


def parser(doc: str, bpe_merges: int) -> argparse.ArgumentParser:
    """The options every benchmark script shares; `doc` is the script's module docstring."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
        # Exact names only: an abbreviation must not swallow an option meant for prepare_parallel.py.
        allow_abbrev=False,
        epilog="Options not listed here (e.g. --max-train, --max-tokens, --lowercase) are passed on "
               "to prepare_parallel.py, after the benchmark's own settings, which they override.",
    )
    p.add_argument("--raw", help="the already-downloaded official release: an archive or a folder "
                                 "(searched recursively); if omitted, the data are downloaded")
    p.add_argument("--out", required=True, help="destination folder of the binarized data")
    p.add_argument("--work", help="scratch folder for downloads, extracted archives and the generic "
                                  "text layout (default: OUT/work; delete it when done)")
    p.add_argument("--bpe-merges", type=int, default=bpe_merges,
                   help=f"joint BPE merge operations (default: {bpe_merges})")
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    return p


def parse(p: argparse.ArgumentParser, argv=None):
    """Parse known options; the rest is returned unchanged for prepare_parallel.py."""
    args, passthrough = p.parse_known_args(argv)
    args.work = args.work or os.path.join(args.out, "work")
    return args, passthrough


def run_prepare_parallel(args, passthrough, src: str, tgt: str, options=()) -> None:
    """Binarize WORK/text with prepare_parallel.py; `options` are the benchmark's fixed flags.

    The user's own pass-through options come last so that they override the benchmark
    defaults (argparse keeps the last value of a repeated option).
    """
    argv = [
        "--raw", text_dir(args), "--src", src, "--tgt", tgt, "--out", args.out,
        "--bpe-merges", str(args.bpe_merges), "--workers", str(args.workers),
        *options, *passthrough,
    ]
    print(f"prepare_parallel.py {' '.join(argv)}", flush=True)
    prepare_parallel.main(argv)


# --------------------------------------------------------------------------- getting the release


def download(urls, dest: str) -> None:
    """Fetch each (url, filename) into dest unless already there; offline -> one-line DataError."""
    os.makedirs(dest, exist_ok=True)
    for url, name in urls:
        path = os.path.join(dest, name)
        if os.path.exists(path):
            continue
        print(f"downloading {url}", flush=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(path + ".part", "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DataError(f"cannot download {url} ({reason}); if this machine is offline, "
                            f"fetch it elsewhere and pass --raw PATH") from None
        os.replace(path + ".part", path)
        if name.endswith(ARCHIVE_SUFFIXES) and not is_archive(path):
            os.remove(path)
            raise DataError(f"{url} did not return an archive (a web page instead?); "
                            f"fetch it in a browser and pass --raw PATH")


def is_archive(path: str) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def extract(archive: str, dest: str) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            # The "data" filter refuses absolute paths, '..' and links out of dest.
            t.extractall(dest, filter="data")
    else:
        raise DataError(f"{archive} is neither a tar nor a zip archive")


class RawFiles:
    """The files of an official release, found by name whatever the folder nesting.

    `path` is a folder or one archive (.tgz/.tar.gz/.tar/.zip). Archives (the given one, or
    any inside the folder when a file is not found among the plain files) are extracted once
    into WORK/extracted, since releases are shipped both packed and unpacked.
    """

    def __init__(self, path: str, work: str):
        if not os.path.exists(path):
            raise DataError(f"--raw {path} does not exist")
        if os.path.isfile(path) and not is_archive(path):
            raise DataError(f"--raw {path} is neither a folder nor a tar/zip archive")
        self.path = path
        self.extracted = os.path.abspath(os.path.join(work, "extracted"))
        self.roots = [path] if os.path.isdir(path) else []
        self.pending = [] if os.path.isdir(path) else [path]  # archives not yet extracted
        self.done = set()
        self._index()

    def _index(self) -> None:
        self.files = []  # (path below its root, full path)
        for root in self.roots:
            for d, subdirs, names in os.walk(root):
                # Our own extraction folder may sit inside --raw; it is indexed as its own root.
                subdirs[:] = sorted(sub for sub in subdirs
                                    if os.path.abspath(os.path.join(d, sub)) != self.extracted)
                for n in sorted(names):
                    full = os.path.join(d, n)
                    if not n.endswith(ARCHIVE_SUFFIXES):
                        self.files.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
                    elif full not in self.done and full not in self.pending:
                        self.pending.append(full)

    def _extract_pending(self) -> bool:
        """Extract the archives seen so far; False when there were none left."""
        if not self.pending:
            return False
        for archive in self.pending:
            dest = os.path.join(self.extracted, os.path.basename(archive))
            if not os.path.exists(dest + ".done"):  # a rerun reuses an earlier extraction
                print(f"extracting {archive}", flush=True)
                shutil.rmtree(dest, ignore_errors=True)
                extract(archive, dest)
                open(dest + ".done", "w").close()
            self.done.add(archive)
            self.roots.append(dest)
        self.pending = []
        self._index()
        return True

    def _match(self, pattern: str):
        pattern = pattern.lower()
        return sorted(full for rel, full in self.files
                      if fnmatch.fnmatchcase(rel.lower(), pattern)
                      or fnmatch.fnmatchcase(rel.lower(), "*/" + pattern))

    def find(self, *patterns: str) -> str:
        """The one file matching the first pattern that matches anything (case-insensitive).

        A pattern is matched against the path below the release root, or any tail of it
        (so "Giga/input.txt" does not pick up "DUC2004/input.txt").
        """
        while True:
            for pattern in patterns:
                hits = self._match(pattern)
                if len(hits) > 1 and not _same_content(hits):
                    raise DataError(f"{len(hits)} files in {self.path} match {pattern} "
                                    f"({hits[0]}, {hits[1]}, ...); pass a narrower --raw")
                if hits:
                    return hits[0]
            if not self._extract_pending():
                raise DataError(f"no {' or '.join(patterns)} in {self.path}")

    def exists(self, pattern: str) -> bool:
        try:
            self.find(pattern)
            return True
        except DataError:
            return False


def _same_content(paths) -> bool:
    """True when the files are byte-identical (a release extracted twice is not ambiguous)."""
    import filecmp

    return all(filecmp.cmp(paths[0], other, shallow=False) for other in paths[1:])


def open_raw(args, urls=(), no_url_hint: str = "") -> RawFiles:
    """The release given by --raw, or else the one downloaded from `urls` into WORK/orig."""
    if args.raw:
        return RawFiles(args.raw, args.work)
    if not urls:
        raise DataError(f"no --raw given and this data set has no direct download URL; {no_url_hint}")
    orig = os.path.join(args.work, "orig")
    download(urls, orig)
    return RawFiles(orig, args.work)


# --------------------------------------------------------------------------- reading official formats


def read_text(path: str):
    """Lines of a UTF-8 text file (optionally gzipped), without line ends."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            return [line.rstrip("\n").rstrip("\r") for line in f]
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8 ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e})") from None


_SEG = re.compile(r"<seg\b[^>]*>(.*?)</seg>", re.IGNORECASE)


def read_segs(path: str, curly_apostrophe: bool = False):
    """The <seg id="..."> texts of a WMT .sgm or IWSLT .xml file, in order, whitespace-trimmed.

    curly_apostrophe=True maps U+2019 to ASCII ', as fairseq's prepare-iwslt14.sh and
    prepare-wmt14en2de.sh do (`sed "s/\\’/\\'/g"`) on their test sets.
    """
    segs = []
    for n, line in enumerate(read_text(path), 1):
        if "<seg" not in line.lower():
            continue
        m = _SEG.search(line)
        if not m:
            raise DataError(f"{path}:{n}: <seg> line without a closing </seg>")
        text = m.group(1).strip()
        segs.append(text.replace("\u2019", "'") if curly_apostrophe else text)
    if not segs:
        raise DataError(f"{path} has no <seg> lines")
    return segs


def read_jsonl(path: str, keys):
    """One tuple of the given fields per line of a .jsonl file; each field may list aliases."""
    rows = []
    for n, line in enumerate(read_text(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not a JSON line ({e.msg})") from None
        row = []
        for aliases in keys:
            aliases = (aliases,) if isinstance(aliases, str) else aliases
            value = next((obj[a] for a in aliases if isinstance(obj, dict) and a in obj), None)
            if not isinstance(value, str):
                raise DataError(f"{path}:{n}: no string field {' or '.join(aliases)}")
            # A newline inside a field would shift every later line of the text layout.
            row.append(" ".join(value.split()))
        rows.append(tuple(row))
    return rows


def remove_non_printing(line: str) -> str:
    """Moses remove-non-printing-char.perl: every Unicode 'C*' (control/format/...) char -> space."""
    if line.isprintable():  # the common case, fast; isprintable() is False for all C* chars
        return line
    import unicodedata

    return "".join(" " if unicodedata.category(c)[0] == "C" else c for c in line)


# --------------------------------------------------------------------------- the generic layout


def text_dir(args) -> str:
    return os.path.join(args.work, "text")


def write_split(args, split: str, src: str, tgt: str, src_lines, tgt_lines) -> None:
    """Write WORK/text/{split}.{src,tgt} after checking the two sides pair up."""
    if len(src_lines) != len(tgt_lines):
        raise DataError(f"{split}: {len(src_lines)} {src} segments but {len(tgt_lines)} {tgt} segments")
    if not src_lines:
        raise DataError(f"{split} split is empty")
    os.makedirs(text_dir(args), exist_ok=True)
    for lang, lines in ((src, src_lines), (tgt, tgt_lines)):
        with open(os.path.join(text_dir(args), f"{split}.{lang}"), "w", encoding="utf-8") as f:
            for line in lines:
                # prepare_parallel.py and fairseq read with universal newlines: a stray CR
                # inside a segment would split it and shift every later line.
                f.write(line.replace("\r", " ").replace("\n", " ") + "\n")
    print(f"{split}: {len(src_lines)} pairs", flush=True)


def read_parallel(raw: RawFiles, src_patterns, tgt_patterns, what: str, reader=read_text):
    """Both sides of one parallel file pair, checked for equal length."""
    src_path, tgt_path = raw.find(*src_patterns), raw.find(*tgt_patterns)
    src, tgt = reader(src_path), reader(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"{what}: {len(src)} lines in {src_path} but {len(tgt)} in {tgt_path}")
    return src, tgt


# --------------------------------------------------------------------------- DiffuSeq jsonl splits


def diffuseq_main(prog: str, doc: str, argv, download_page: str) -> None:
    """Shared body of prepare_qqp.py and prepare_wiki_auto.py (same DiffuSeq jsonl format).

    The folder holds train.jsonl, valid.jsonl (some copies: val.jsonl / dev.jsonl) and
    test.jsonl, one {"src": ..., "trg": ...} object a line, both sides English. The sides are
    called src/tgt in the generic layout and Moses-tokenized as English.
    """
    p = parser(doc, bpe_merges=10000)
    args, passthrough = parse(p, argv)
    with reporting(prog):
        raw = open_raw(args, no_url_hint=f"download the DiffuSeq folder {download_page} "
                                         f"(e.g. with gdown --folder) and pass --raw DIR")
        names = {"train": ["train.jsonl"], "valid": ["valid.jsonl", "val.jsonl", "dev.jsonl"],
                 "test": ["test.jsonl"]}
        for split in SPLITS:
            rows = read_jsonl(raw.find(*names[split]), ["src", ("trg", "tgt")])
            write_split(args, split, "src", "tgt", [r[0] for r in rows], [r[1] for r in rows])
    run_prepare_parallel(args, passthrough, "src", "tgt",
                         ["--src-moses-lang", "en", "--tgt-moses-lang", "en"])
