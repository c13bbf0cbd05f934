"""Tests of the benchmark preparation scripts in preprocess/.

Each test builds a tiny copy of a benchmark's official raw format (tag files and xml in a
de-en.tgz, WMT sgm files and packed corpora, DiffuSeq jsonl, Gigaword text), runs the script
with 50 BPE merges and one worker, and loads the binarized splits with fairseq.
"""

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import pytest
import sacremoses  # noqa: F401  (imported once here, so the forked tokenizer workers start at once)
from fairseq.data import Dictionary, data_utils

PREPROCESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "preprocess")
sys.path.insert(0, PREPROCESS)
import common  # noqa: E402
import prepare_gigaword  # noqa: E402
import prepare_iwslt14  # noqa: E402
import prepare_qqp  # noqa: E402
import prepare_wiki_auto  # noqa: E402
import prepare_wmt14_en_de  # noqa: E402
import prepare_wmt16_en_ro  # noqa: E402

TINY = ["--bpe-merges", "50", "--workers", "1"]


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def sgm(kind, lang, segs):
    head = f'<{kind}set setid="x" srclang="any" trglang="{lang}">\n<doc docid="d1" genre="news">\n'
    body = "".join(f'<seg id="{i}"> {s} </seg>\n' for i, s in enumerate(segs, 1))
    return (head + "<p>\n" + body + f"</p>\n</doc>\n</{kind}set>").split("\n")


def pack_tar(archive, files):
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    with tarfile.open(archive, "w:gz") as t:
        for name, lines in files.items():
            data = "".join(line + "\n" for line in lines).encode("utf-8")
            if name.endswith(".gz"):  # a gzipped member inside the archive
                data = gzip.compress(data)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def loaded(out, src, tgt):
    """Number of sentences per split and side, read back with fairseq; both sides must agree."""
    d = Dictionary.load(os.path.join(out, f"dict.{src}.txt"))
    sizes = {}
    for split in ("train", "valid", "test"):
        n = [len(data_utils.load_indexed_dataset(os.path.join(out, f"{split}.{src}-{tgt}.{lang}"), d))
             for lang in (src, tgt)]
        assert n[0] == n[1], split
        sizes[split] = n[0]
    return sizes, d


def refs(out, name):
    with open(os.path.join(out, "refs", name), encoding="utf-8") as f:
        return f.read().splitlines()


def decoded(out, split, pair, lang, d, i):
    ds = data_utils.load_indexed_dataset(os.path.join(out, f"{split}.{pair}.{lang}"), d)
    return d.string(ds[i], bpe_symbol="subword_nmt")


# --------------------------------------------------------------------------- IWSLT14


def iwslt_talk(lang, n, sentences):
    title = {"de": f"Sprecher {n}: Ein Titel", "en": f"Speaker {n}: A title"}[lang]
    desc = {"de": "TED Talk Untertitel und Abschrift: Eine Beschreibung.",
            "en": "TED Talk Subtitles and Transcript: A description."}[lang]
    return ([f"<url>http://www.ted.com/talks/{n}.html</url>", "<keywords>talks, science</keywords>",
             f"<speaker>Speaker {n}</speaker>", f"<talkid>{n}</talkid>", f"<title>{title}</title>",
             f"<description>{desc}</description>"] + sentences
            + ['<reviewer href="http://x">Rev</reviewer>', '<translator href="http://y">Tr</translator>'])


def test_iwslt14(tmp_path):
    de = [f"Das ist Satz Nummer {i} über die Welt." for i in range(45)]
    en = [f"This is sentence number {i} about the world." for i in range(45)]
    de[5], en[5] = "Ja.", "Yes, yes, yes, I think that this is absolutely right, my dear friend."  # ratio > 1.5
    de[9], en[9] = " ".join(["Wort"] * 180), " ".join(["word"] * 180)  # > 175 tokens
    de[0] = "Das ist „Satz“ null – über die Welt."  # prepare-iwslt14.sh normalizes no punctuation
    files = {
        "de-en/train.tags.de-en.de": iwslt_talk("de", 1, de[:20]) + iwslt_talk("de", 2, de[20:]),
        "de-en/train.tags.de-en.en": iwslt_talk("en", 1, en[:20]) + iwslt_talk("en", 2, en[20:]),
    }
    for name in prepare_iwslt14.TEST_SETS:
        for lang, text in (("de", "Es ist’s {} {}."), ("en", "It’s {} {}.")):
            segs = [text.format(name, i) for i in range(2)]
            files[f"de-en/IWSLT14.{name}.de-en.{lang}.xml"] = sgm("ref", lang, segs)
    files["de-en/IWSLT14.TED.tst2013.de-en.de.xml"] = sgm("src", "de", ["Nicht im Testset."])  # not a test set
    pack_tar(tmp_path / "de-en.tgz", files)

    out = str(tmp_path / "bin")
    prepare_iwslt14.main(["--raw", str(tmp_path / "de-en.tgz"), "--out", out, *TINY])

    # 45 sentences + 2 titles + 2 descriptions, less the 2 bad pairs = 47 clean; every 23rd is valid.
    sizes, d = loaded(out, "de", "en")
    assert sizes == {"train": 45, "valid": 2, "test": 10}
    train_en = refs(out, "train.en")
    assert not any(tag in line for line in train_en for tag in ("<", "http", "talks, science"))
    assert not {"Speaker 1", "Rev", "Tr"} & set(train_en)  # the <speaker>, <reviewer>, <translator> texts
    assert "Speaker 1: A title" in train_en and "TED Talk Subtitles and Transcript: A description." in train_en
    clean_en = [line for line in (iwslt_talk("en", 1, en[:20]) + iwslt_talk("en", 2, en[20:]))
                if not line.startswith(("<url", "<keywords", "<speaker", "<talkid", "<reviewer", "<translator"))
                and line not in (en[5], en[9])]
    assert refs(out, "valid.en") == [prepare_iwslt14.train_text_line(clean_en[22]),
                                     prepare_iwslt14.train_text_line(clean_en[45])]
    assert refs(out, "test.en")[:3] == ["It's TED.dev2010 0.", "It's TED.dev2010 1.", "It's TEDX.dev2012 0."]
    assert decoded(out, "train", "de-en", "en", d, 0) == "speaker 1 : a title"  # lowercased
    train_de = [decoded(out, "train", "de-en", "de", d, i) for i in range(sizes["train"])]
    assert "das ist „ satz “ null – über die welt ." in train_de, "punctuation kept as fairseq keeps it"
    assert json.load(open(os.path.join(out, "prepare.json")))["normalize_punctuation"] == "none"
    assert "Ja." not in refs(out, "train.de")

    # a looser limit reaches the first cleaning too: the 180-token pair comes back
    looser = str(tmp_path / "looser")
    prepare_iwslt14.main(["--raw", str(tmp_path / "de-en.tgz"), "--out", looser, "--max-tokens", "200", *TINY])
    assert loaded(looser, "de", "en")[0] == {"train": 46, "valid": 2, "test": 10}
    assert json.load(open(os.path.join(looser, "prepare.json")))["max_tokens"] == 200


# --------------------------------------------------------------------------- WMT14 En-De


def test_wmt14_en_de(tmp_path):
    raw = tmp_path / "orig"
    corpora = {"training/europarl-v7.de-en": "Europarl", "commoncrawl.de-en": "Crawl",
               "training/news-commentary-v9.de-en": "Commentary"}
    for path, name in corpora.items():
        en = [f"{name} sentence {i} is state-of-the-art’s." for i in range(8)]
        de = [f"{name} Satz {i} ist auf dem neuesten Stand der Technik." for i in range(8)]
        if name == "Commentary":
            en[3], de[3] = "Yes.", "Ja, ja, ja, das ist ganz und gar richtig, mein lieber Freund."  # ratio > 1.5
            en[4] = en[4].replace("is ", "is\u0007")  # remove-non-printing-char makes it a space
            de[5] = "Commentary „Satz“ 5 ist auf dem neuesten Stand der Technik."  # normalized: „ -> "
        if name == "Crawl":  # shipped still packed, as downloaded
            pack_tar(raw / "training-parallel-commoncrawl.tgz", {f"{path}.en": en, f"{path}.de": de})
        else:
            write(raw / f"{path}.en", en)
            write(raw / f"{path}.de", de)
    write(raw / "dev/newstest2013-src.en.sgm", sgm("src", "en", [f"Dev {i}." for i in range(3)]))
    write(raw / "dev/newstest2013-ref.de.sgm", sgm("ref", "de", [f"Entw {i}." for i in range(3)]))
    write(raw / "test-full/newstest2014-deen-src.en.sgm", sgm("src", "en", [f"Test {i}’s." for i in range(4)]))
    write(raw / "test-full/newstest2014-deen-ref.de.sgm", sgm("ref", "de", [f"Prüfung „{i}“." for i in range(4)]))
    write(raw / "test-full/newstest2014-deen-src.de.sgm", sgm("src", "de", ["Falsche Richtung."]))

    out = str(tmp_path / "bin")
    prepare_wmt14_en_de.main(["--raw", str(raw), "--out", out, *TINY])

    sizes, d = loaded(out, "en", "de")
    assert sizes == {"train": 23, "valid": 3, "test": 4}
    assert d.index("@-@") != d.unk()  # Moses -a
    assert "Commentary sentence 4 is state-of-the-art’s." in refs(out, "train.en")
    # the test set is not normalized, only its ’ mapped, as fairseq's script does; its references
    # keep the official text, as sacrebleu's wmt14/full
    assert refs(out, "test.en")[0] == "Test 0’s." and refs(out, "test.de")[0] == "Prüfung „0“."
    assert decoded(out, "test", "en-de", "en", d, 0).endswith(" 's .")  # ’ mapped
    assert '"' not in decoded(out, "test", "en-de", "de", d, 0)  # „ “ kept (<unk> here), not made "
    train_de = [decoded(out, "train", "en-de", "de", d, i) for i in range(sizes["train"])]
    assert 'Commentary " Satz " 5 ist auf dem neuesten Stand der Technik .' in train_de
    assert "Yes." not in refs(out, "train.en")


# --------------------------------------------------------------------------- WMT16 En-Ro

RO_DIACRITICS = "șşțţăâîȘŞȚŢĂÂÎ"


def test_romanian_normalisation():
    line = "Aceşti oameni ţin în ţară, Ştefan şi Ţuţea; ÎNSĂ Âşa"
    comma = "Acești oameni țin în țară, Ștefan și Țuțea; ÎNSĂ Âșa"
    assert prepare_wmt16_en_ro.normalise_romanian(line) == comma
    assert prepare_wmt16_en_ro.romanian([line]) == ["Acesti oameni tin in tara, Stefan si Tutea; INSA Asa"]


def test_wmt16_en_ro(tmp_path):
    raw = tmp_path / "orig"
    en = [f"These people {i} live in the country." for i in range(10)]
    ro = [f"Aceşti oameni {i} trăiesc în ţară." for i in range(10)]
    pack_tar(raw / "training-parallel-ep-v8.tgz", {"training-parallel-ep-v8/europarl-v8.ro-en.en": en[:6],
                                                   "training-parallel-ep-v8/europarl-v8.ro-en.ro": ro[:6]})
    with zipfile.ZipFile(raw / "en-ro.txt.zip", "w") as z:
        z.writestr("SETIMES.en-ro.en", "".join(s + "\n" for s in en[6:]))
        z.writestr("SETIMES.en-ro.ro", "".join(s.replace("ţ", "ț").replace("ş", "ș") + "\n" for s in ro[6:]))
        z.writestr("README", "OPUS\n")
    write(raw / "dev/newsdev2016-enro-src.en.sgm", sgm("src", "en", ["Dev sentence.", "Another one."]))
    write(raw / "dev/newsdev2016-enro-ref.ro.sgm", sgm("ref", "ro", ["Propoziție de dezvoltare.", "Încă una."]))
    write(raw / "test/newstest2016-enro-src.en.sgm", sgm("src", "en", ["Test sentence.", "Two.", "Three."]))
    write(raw / "test/newstest2016-enro-ref.ro.sgm", sgm("ref", "ro", ["Propoziţie de test.", "Două.", "Trei."]))

    out = str(tmp_path / "bin")
    prepare_wmt16_en_ro.main(["--raw", str(raw), "--out", out, *TINY])

    sizes, d = loaded(out, "en", "ro")
    assert sizes == {"train": 10, "valid": 2, "test": 3}
    ro_text = [line for split in ("train", "valid", "test") for line in refs(out, f"{split}.ro")]
    assert not any(c in line for line in ro_text for c in RO_DIACRITICS)
    assert not any(c in d.symbols[i] for i in range(len(d)) for c in RO_DIACRITICS)
    assert refs(out, "train.ro")[0] == "Acesti oameni 0 traiesc in tara."
    assert refs(out, "test.ro") == ["Propozitie de test.", "Doua.", "Trei."]


# --------------------------------------------------------------------------- DiffuSeq QQP / Wiki-Auto


@pytest.mark.parametrize("script,valid_name", [(prepare_qqp, "valid.jsonl"), (prepare_wiki_auto, "val.jsonl")])
def test_diffuseq_jsonl(tmp_path, script, valid_name):
    raw = tmp_path / "raw"
    counts = {"train.jsonl": 30, valid_name: 4, "test.jsonl": 5}
    for name, n in counts.items():
        rows = [{"src": f"How can I learn {name} topic {i}?", "trg": f"What is the best way to learn topic {i}?"}
                for i in range(n)]
        rows[0]["src"] = "A question split\nover two lines?"  # must stay one line of the layout
        write(raw / name, [json.dumps(r) for r in rows])

    out = str(tmp_path / "bin")
    script.main(["--raw", str(raw), "--out", out, *TINY])

    sizes, d = loaded(out, "src", "tgt")
    assert sizes == {"train": 30, "valid": 4, "test": 5}
    assert refs(out, "test.src")[0] == "A question split over two lines?"
    assert refs(out, "test.tgt")[1] == "What is the best way to learn topic 1?"


# --------------------------------------------------------------------------- Gigaword


def gigaword_pairs(n, unk):
    articles = [f"the company 's profit rose #.## percent to {unk} in the {i} quarter" for i in range(n)]
    titles = [f"{unk} profit rises #.# percent in quarter {i}" for i in range(n)]
    return articles, titles


@pytest.mark.parametrize("layout", ["sumdata", "org_data"])
def test_gigaword(tmp_path, layout):
    train, valid, test = gigaword_pairs(30, "<unk>"), gigaword_pairs(4, "<unk>"), gigaword_pairs(5, "UNK")
    if layout == "sumdata":  # the harvardnlp archive (train gzipped inside it), with the DUC sets
        # that share file names
        files = {"sumdata/train/train.article.txt.gz": train[0], "sumdata/train/train.title.txt.gz": train[1],
                 "sumdata/train/valid.article.filter.txt": valid[0], "sumdata/train/valid.title.filter.txt": valid[1],
                 "sumdata/Giga/input.txt": test[0], "sumdata/Giga/task1_ref0.txt": test[1],
                 "sumdata/DUC2004/input.txt": ["duc article"]}
        raw = tmp_path / "summary.tar.gz"
        pack_tar(raw, files)
    else:
        raw = tmp_path / "ggw"
        for name, pair in (("train", train), ("dev", valid), ("test", test)):
            write(raw / f"org_data/{name}.src.txt", pair[0])
            write(raw / f"org_data/{name}.tgt.txt", pair[1])

    out = str(tmp_path / "bin")
    prepare_gigaword.main(["--raw", str(raw), "--out", out, *TINY])

    sizes, d = loaded(out, "src", "tgt")
    assert sizes == {"train": 30, "valid": 4, "test": 5}
    assert refs(out, "train.tgt")[2] == "UNK profit rises #.# percent in quarter 2"
    # No Moses pass: BPE-decoding gives back the official tokens exactly ('s and #.## intact).
    expected = "the company 's profit rose #.## percent to UNK in the 1 quarter"
    assert decoded(out, "train", "src-tgt", "src", d, 1) == expected
    assert decoded(out, "test", "src-tgt", "tgt", d, 0) == "UNK profit rises #.# percent in quarter 0"


# --------------------------------------------------------------------------- bad input


def one_line_exit(excinfo, prog, *words):
    msg = str(excinfo.value.code)
    assert msg.startswith(f"{prog}: error: ") and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_missing_file_is_one_line_error(tmp_path):
    write(tmp_path / "raw/train.jsonl", ['{"src": "a", "trg": "b"}'])
    write(tmp_path / "raw/test.jsonl", ['{"src": "a", "trg": "b"}'])
    with pytest.raises(SystemExit) as e:
        prepare_qqp.main(["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "bin")])
    one_line_exit(e, "prepare_qqp", "valid.jsonl")


def test_prepare_parallel_refuses_what_would_fail_later_in_one_line(tmp_path):
    """No training pair left after cleaning (the error used to come at training time), and
    --workers 0 (a multiprocessing traceback)."""
    import prepare_parallel

    raw = tmp_path / "raw"
    for split in ("train", "valid", "test"):
        write(raw / f"{split}.de", ["Ein Satz ."])
        write(raw / f"{split}.en", ["A sentence ."])
    common_args = ["--raw", str(raw), "--src", "de", "--tgt", "en", "--out", str(tmp_path / "bin")]
    for extra, words in ((["--max-tokens", "1"], ("kept no training pair", "--max-tokens 1")),
                         (["--workers", "0"], ("--workers must be >= 1",))):
        with pytest.raises(SystemExit) as e:
            prepare_parallel.main(common_args + extra)
        one_line_exit(e, "prepare_parallel", *words)


def test_unpaired_sgm_is_one_line_error(tmp_path):
    raw = tmp_path / "raw"
    write(raw / "dev/newsdev2016-enro-src.en.sgm", sgm("src", "en", ["One.", "Two."]))
    write(raw / "dev/newsdev2016-enro-ref.ro.sgm", sgm("ref", "ro", ["Unu."]))
    for corpus in ("europarl-v8.ro-en", "SETIMES.en-ro"):
        write(raw / f"{corpus}.en", ["x"])
        write(raw / f"{corpus}.ro", ["y"])
    with pytest.raises(SystemExit) as e:
        prepare_wmt16_en_ro.main(["--raw", str(raw), "--out", str(tmp_path / "bin")])
    one_line_exit(e, "prepare_wmt16_en_ro", "newsdev2016", "2 lines", "1 in")


def test_bad_jsonl_and_not_a_release(tmp_path):
    write(tmp_path / "raw/train.jsonl", ['{"src": "a", "trg": "b"}', "not json"])
    with pytest.raises(SystemExit) as e:
        prepare_wiki_auto.main(["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "bin")])
    one_line_exit(e, "prepare_wiki_auto", "train.jsonl:2", "not a JSON line")
    with pytest.raises(SystemExit) as e:
        prepare_gigaword.main(["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "bin")])
    one_line_exit(e, "prepare_gigaword", "not a Gigaword release")


def test_offline_download_is_one_line_error(tmp_path, monkeypatch):
    # Nothing listens on the discard port, so this fails at once, like a machine without network.
    monkeypatch.setattr(prepare_iwslt14, "URLS", [("http://127.0.0.1:9/de-en.tgz", "de-en.tgz")])
    with pytest.raises(SystemExit) as e:
        prepare_iwslt14.main(["--out", str(tmp_path / "bin")])
    one_line_exit(e, "prepare_iwslt14", "cannot download http://127.0.0.1:9/de-en.tgz", "--raw")
    with pytest.raises(SystemExit) as e:
        prepare_qqp.main(["--out", str(tmp_path / "bin")])
    one_line_exit(e, "prepare_qqp", "drive.google.com", "--raw")


def test_command_line_error_is_one_line(tmp_path):
    """Run as a script (no fairseq import on this path, so it is quick): one stderr line, rc != 0."""
    missing = str(tmp_path / "nowhere")
    r = subprocess.run([sys.executable, os.path.join(PREPROCESS, "prepare_wmt14_en_de.py"), "--raw", missing,
                        "--out", str(tmp_path / "bin")], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr == f"prepare_wmt14_en_de: error: --raw {missing} does not exist\n"


def test_the_inference_tokenizer_follows_the_datas_prepare_settings():
    """--tokenizer moses on prepared data (fastdiss_fairseq/prepared_text.py): no escaping, dash
    splits and lowercasing as prepare.json says, and the Moses language of src/tgt data is the
    one prepare_parallel.py used (English), not "src"."""
    from fastdiss_fairseq.prepared_text import PreparedTextTokenizer

    lowercased = PreparedTextTokenizer({"lowercase": True, "moses_langs": {"src": "en", "tgt": "en"}}, "src", "tgt")
    # (English punctuation normalization moves the full stop inside the quotes, as it did in training)
    assert lowercased.encode('He isn\'t "well-known".') == 'he isn \'t " well-known . "'
    assert (lowercased.source_moses_lang, lowercased.target_moses_lang) == ("en", "en")
    assert PreparedTextTokenizer({}, "src", "tgt").source_moses_lang == "en"  # an older prepare.json
    assert PreparedTextTokenizer({"aggressive_dash": True}, "en", "de").encode("well-known") == "well @-@ known"
    assert PreparedTextTokenizer({"pretokenized": True}, "en", "en").encode(" it 's  # . ## ") == "it 's # . ##"
    # raw text is tokenized as the test split was: normalized, only ’ mapped, or kept
    text = "He said “yes” – it’s fine."
    for scope, expect in (("all", 'He said " yes " - it \'s fine .'), ("train", "He said “ yes ” – it 's fine ."),
                          ("none", "He said “ yes ” – it ’ s fine .")):
        assert PreparedTextTokenizer({"normalize_punctuation": scope}, "en", "de").encode(text) == expect, scope
    assert PreparedTextTokenizer({}, "en", "de").encode(text) == 'He said " yes " - it \'s fine .'  # older files
