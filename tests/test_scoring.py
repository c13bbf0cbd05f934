"""fastdiss-score: which lines it reads, how it detokenizes, and its errors."""

import json
import logging
import shlex
import subprocess
import sys

import pytest

from fastdiss_fairseq.scoring import score_generate_output

GENERATE_OUTPUT = (
    "S-1\tes ist gut .\n"
    "T-1\tit 's fine .\n"
    "H-1\t-0.5\tit 's fine .\n"
    "D-1\t-0.5\tit 's fine .\n"
    "P-1\t-0.5 -0.5 -0.5 0.0\n"
    "S-0\tein Hund schläft hier .\n"
    "T-0\ta dog sleeps here .\n"
    "H-0\t-0.2\ta dog sleeps here .\n"
    "D-0\t-0.2\ta dog sleeps here .\n"
)
REFS = ["a dog sleeps here.", "it's fine."]


def test_detokenized_output_matches_raw_references_exactly():
    scores = score_generate_output(GENERATE_OUTPUT, REFS, detok_lang="en")
    assert scores["sacrebleu"] == pytest.approx(100.0)
    assert scores["bleu_tokenized"] == pytest.approx(100.0)
    # without detokenization the D-lines keep "it 's" and no longer match the raw references
    assert score_generate_output(GENERATE_OUTPUT, REFS)["sacrebleu"] < 100.0


def test_lowercase_refs_scores_a_lowercased_model_against_cased_references(tmp_path):
    """IWSLT14 is lowercased in preprocessing: its raw references must be lowercased to match."""
    from fastdiss_fairseq.scoring import main

    (tmp_path / "gen.txt").write_text(GENERATE_OUTPUT, encoding="utf-8")
    (tmp_path / "refs.en").write_text("A dog sleeps here.\nIt's fine.\n", encoding="utf-8")
    for flags, expected in (([], lambda v: v < 100.0), (["--lowercase-refs"], lambda v: v == pytest.approx(100.0))):
        main([str(tmp_path / "gen.txt"), "--refs", str(tmp_path / "refs.en"), "--detok-lang", "en",
              "--json", str(tmp_path / "s.json"), *flags])
        assert expected(json.load(open(tmp_path / "s.json"))["sacrebleu"]), flags


def test_tokenized_bleu_does_not_warn_about_tokenized_text(caplog):
    # sacrebleu warns once 100 or more hypotheses end in a tokenized period
    many = "".join(
        f"T-{i}\ta dog .\nH-{i}\t-0.1\ta dog .\nD-{i}\t-0.1\ta dog .\n" for i in range(120)
    )
    with caplog.at_level(logging.WARNING):
        score_generate_output(many, ["a dog."] * 120, detok_lang="en")
    assert not [r for r in caplog.records if "detokenize" in r.getMessage()]


def test_reference_count_mismatch_is_one_clear_error():
    with pytest.raises(ValueError, match="2 hypotheses but the references have 3 lines"):
        score_generate_output(GENERATE_OUTPUT, ["a", "b", "c"])


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(tmp_path):
    """`fastdiss-score out.txt --refs r | head -1`: exit 0, no BrokenPipeError on stderr,
    and the --json file written all the same."""
    gen, refs, out = tmp_path / "gen.txt", tmp_path / "refs.txt", tmp_path / "scores.json"
    gen.write_text(GENERATE_OUTPUT, encoding="utf-8")
    refs.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    cmd = (f"{shlex.quote(sys.executable)} -m fastdiss_fairseq.scoring {gen} --refs {refs} "
           f"--detok-lang en --json {out} | head -c 0")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads(out.read_text())["sacrebleu"] == pytest.approx(100.0)
