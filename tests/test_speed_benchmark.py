"""recipes/speed_benchmark.py (issue 5): the commands it gives fairseq on each device, the training
throughput it reads from fairseq's logs, and the prepared GPU check (recipes/gpu/run_gpu_speed.sh)
run end to end on the CPU with tiny models: the same pipeline a lent GPU runs."""

import argparse
import json
import os
import sys

import pytest

from conftest import ROOT, run_gpu_script

sys.path.insert(0, os.path.join(ROOT, "recipes"))
import speed_benchmark  # noqa: E402


def bench_args(**overrides):
    args = dict(device="cpu", size="small", max_tokens=3072, t_min=0.5, batch_size=100,
                decoding_dtype="float32", fp32_matmul_precision="highest")
    return argparse.Namespace(**{**args, **overrides})


@pytest.mark.parametrize("model", ["ar", "cmlm", "fastdiss"])
def test_on_a_gpu_every_decode_drops_cpu_and_syncs_the_timer(model):
    on_cpu, env_cpu, _ = speed_benchmark.generate_command(bench_args(), "data", "m.pt", model, ["--beam", "5"])
    on_gpu, env_gpu, _ = speed_benchmark.generate_command(bench_args(device="cuda"), "data", "m.pt", model,
                                                          ["--beam", "5"])
    assert "--cpu" in on_cpu and "--cpu" not in on_gpu
    assert [a for a in on_cpu if a != "--cpu"] == on_gpu
    assert "SYNC_CUDA_TIMER" not in env_cpu and env_gpu["SYNC_CUDA_TIMER"] == "1"


def test_fastdiss_trains_at_the_peers_size_and_batch(monkeypatch):
    import ablation

    for name in ("MODEL_ARGS", "OPTIM_ARGS"):  # configure() edits the module's lists
        monkeypatch.setattr(ablation, name, list(getattr(ablation, name)))
    cmd = speed_benchmark.fastdiss_training_args(bench_args(device="cuda", size="iwslt", max_tokens=8192, t_min=0.0))
    assert cmd[cmd.index("--arch") + 1] == "fastdiss_iwslt_de_en"
    assert cmd[cmd.index("--max-tokens") + 1] == "8192"
    assert "--scp" in cmd and "--mans" in cmd and "--t-min" not in cmd
    peer = speed_benchmark.size_args("iwslt")
    assert peer[peer.index("--decoder-layers") + 1] == 6 and peer[peer.index("--encoder-embed-dim") + 1] == 512
    # pre-norm at every size, as FastDiSS (post-norm collapsed at this warm-up at both sizes)
    for peer in (peer, speed_benchmark.size_args("small")):
        assert "--encoder-normalize-before" in peer and "--decoder-normalize-before" in peer


def test_training_throughput_is_the_median_wps_after_the_first_interval(tmp_path):
    log = tmp_path / "train.log"
    lines = [f"2026-12-04 05:00:0{i} | INFO | train_inner | epoch 001:     {50 * (i + 1)} / 177 loss=9.1, "
             f"wps={w}, ups=1.2, wpb=4462.7" for i, w in enumerate([100.0, 5000.0, 6000.0, 7000.5])]
    lines.append("2026-12-04 05:00:09 | INFO | train | epoch 001 | loss 7.9 | wps 1.0 | ups 1.33")
    log.write_text("\n".join(lines) + "\n")
    assert speed_benchmark.training_tokens_per_s(str(log)) == 6000.0
    # the peers' logs under the wrapper: the root logger's format
    log.write_text("".join(f"INFO:train_inner:epoch 001:     {50 * (i + 1)} / 177 loss=9.1, wps={w}, ups=1.2\n"
                           for i, w in enumerate([100.0, 5000.0, 6000.0, 7000.5])))
    assert speed_benchmark.training_tokens_per_s(str(log)) == 6000.0
    log.write_text(lines[0] + "\n")
    assert speed_benchmark.training_tokens_per_s(str(log)) is None
    assert speed_benchmark.training_tokens_per_s(str(tmp_path / "missing.log")) is None


def test_the_gpu_speed_check_runs_end_to_end_on_the_cpu(tiny_data, tmp_path):
    """run_gpu_speed.sh with DEVICE=cpu: FastDiSS, AR and CMLM trained side by side from scratch,
    every configuration decoded, the report written with each model's updates."""
    run_gpu_script("run_gpu_speed", tiny_data, tmp_path, SIZE="small", UPDATES="2", MAX_TOKENS="2048", BATCH="50")
    out = tmp_path / "out"
    report = json.load(open(out / "speed.json"))
    assert report["settings"]["fastdiss_updates"] == 2 and report["settings"]["peer_updates"] == {"ar": 2, "cmlm": 2}
    rows = {r["config"]: r for r in report["rows"]}
    assert len(rows) == 16 and {"AR beam 5", "CMLM 10 it.", "FastDiSS 5 st. (L=1)", "FastDiSS 50 st. (L=5)"} <= set(rows)
    assert all(r["sentences_per_s"] > 0 and r["timed_runs"] == (2 if c == "AR beam 5" else 1) for c, r in rows.items())
    assert rows["AR beam 5"]["sentences_per_s_first"] > 0 and rows["AR beam 5"]["sentences_per_s_last"] > 0
    assert (out / "speed.md").read_text().count("\n| ") == 17  # header and 16 rows
    assert (out / "machine.txt").exists() and (out / "speed.png").exists()
    assert (out / "speed_profile.md").exists()  # on the CPU the generator profile runs too


def test_a_row_in_its_own_processes_times_the_runs_after_the_warm_up(monkeypatch, tmp_path):
    """The CPU table's way (a fairseq-generate process a run): the warm-up is left out, unless it
    alone already takes longer than --single-run-seconds. The rates are fairseq's own, not
    sentences over its seconds, which it prints rounded to 0.1 s (1.25 s as '1.2s')."""
    seconds = iter([2.0, 1.0, 1.25, 1.5])

    def fake_fairseq(module, args, out_path=None, threads=None, env_extra=None):
        secs = next(seconds)
        return (f"Translated 2,000 sentences (40,000 tokens) in {secs:.1f}s ({2000 / secs:.2f} sentences/s, "
                f"{40000 / secs:.2f} tokens/s)\nPEAK_RSS_KB 2048\n", secs + 3.0)

    monkeypatch.setattr(speed_benchmark, "fairseq", fake_fairseq)
    args = bench_args(repeats=3, single_run_seconds=45.0, threads=2)
    runs, dtype = speed_benchmark.measure_in_own_processes(args, "data", "ckpt.pt", "ar", ["--beam", "5"],
                                                           str(tmp_path / "gen.txt"))
    assert dtype == "float32" and [r[0] for r in runs] == [2000.0, 1600.0, 1333.33]
    assert [r[1] for r in runs] == [40000.0, 32000.0, 26666.67]
    assert runs[0][2] == 2000 / 4.0 and runs[0][3] == 2048  # end to end: the process's wall time
    seconds = iter([60.0])
    runs, _ = speed_benchmark.measure_in_own_processes(args, "data", "ckpt.pt", "ar", [], str(tmp_path / "gen.txt"))
    assert [r[0] for r in runs] == [33.33]  # a long warm-up is the one timed run


def benchmark_work_folder(tmp_path):
    """(work, out): a --work folder with the references and empty FastDiSS and AR checkpoints
    (the decodes are faked), and the report folder's path."""
    work, out = tmp_path / "work", tmp_path / "docs"
    (work / "data-bin" / "refs").mkdir(parents=True)
    (work / "data-bin" / "refs" / "test.en").write_text("a house .\n")
    for model in ("scp_mans.seed1", "peer_ar"):
        (work / model).mkdir()
        (work / model / "checkpoint_last.pt").write_text("")
    return work, out


def write_one_hypothesis(gen_path):
    with open(gen_path, "w") as f:
        f.write("S-0\tein Haus .\nH-0\t-0.1\ta house .\nD-0\t-0.1\ta house .\n")


def test_only_needs_the_checkpoints_of_the_rows_it_measures(monkeypatch, tmp_path):
    """--no-train --only 'FastDiSS 5 st. (L=1)' decodes FastDiSS and AR beam 5 (the reference):
    it runs without a CMLM checkpoint, keeps the other rows of the existing report, and names
    the CMLM checkpoint in a one-line error when a CMLM row is asked for."""
    work, out = benchmark_work_folder(tmp_path)
    decoded = []

    def fake_measure(args, data, ckpt, model, extra, gen_path):
        decoded.append((model, os.path.basename(os.path.dirname(ckpt))))
        write_one_hypothesis(gen_path)
        return [(10.0, 40.0, 5.0, 2048, 0)], "float32"

    monkeypatch.setattr(speed_benchmark, "measure_in_own_processes", fake_measure)
    monkeypatch.setattr(speed_benchmark, "checkpoint_updates", lambda path: 42)
    monkeypatch.setattr(speed_benchmark.subprocess, "run", lambda *a, **k: None)  # the profile
    out.mkdir()
    old = {"config": "CMLM 10 it.", "model": "cmlm", "updates": 40, "measured": "2026-12-03",
           "decoding_dtype": "float32", "sacrebleu": 12.0, "sentences_per_s": 8.0, "tokens_per_s": 150.0,
           "end_to_end_sentences_per_s": 7.8, "peak_rss_mib": 4000.0, "timed_runs": 1}
    (out / "speed.json").write_text(json.dumps({"settings": {
        "fp32_matmul_precision": "highest", "decoding_dtype": "float32", "batch_size": 100, "threads": 2,
        "device": "cpu", "host": speed_benchmark.host_name("cpu"), "work": str(work), "data": None,
        "fastdiss": None, "size": "small", "max_tokens": 3072}, "rows": [old]}))
    common = ["--work", str(work), "--out", str(out), "--no-train", "--train-updates", "42", "--threads", "2"]
    speed_benchmark.main(common + ["--only", "FastDiSS 5 st. (L=1)"])
    assert decoded == [("ar", "peer_ar"), ("fastdiss", "scp_mans.seed1"), ("ar", "peer_ar")]  # AR timed again
    report = json.load(open(out / "speed.json"))
    assert [r["config"] for r in report["rows"]] == ["AR beam 5", "CMLM 10 it.", "FastDiSS 5 st. (L=1)"]
    assert report["settings"]["peer_updates"] == {"ar": 42}
    assert "not re-measured (--only): CMLM 10 it." in (out / "speed.md").read_text()
    with pytest.raises(SystemExit, match=r"no checkpoint .*peer_cmlm/checkpoint_last\.pt; run without --no-train"):
        speed_benchmark.main(common + ["--only", "CMLM 4 it."])
    # CMLM rows alone need no FastDiSS checkpoint: its rows (and their updates) are kept, and the
    # generator profile (a FastDiSS decode) is not run
    (work / "scp_mans.seed1" / "checkpoint_last.pt").unlink()
    (work / "peer_cmlm").mkdir()
    (work / "peer_cmlm" / "checkpoint_last.pt").write_text("")
    decoded.clear()
    monkeypatch.setattr(speed_benchmark.subprocess, "run", lambda *a, **k: pytest.fail("profiled"))
    speed_benchmark.main(common + ["--only", "CMLM 10 it."])
    assert decoded == [("ar", "peer_ar"), ("cmlm", "peer_cmlm"), ("ar", "peer_ar")]
    report = json.load(open(out / "speed.json"))
    assert [r["config"] for r in report["rows"]] == ["AR beam 5", "CMLM 10 it.", "FastDiSS 5 st. (L=1)"]
    assert report["settings"]["fastdiss_updates"] == 42  # the kept FastDiSS row's
    assert "FastDiSS 42, AR 42, CMLM 42" in (out / "speed.md").read_text()
    # a report measured on another host (or one that does not say) keeps none of its rows
    report["settings"]["host"] = "another CPU"
    (out / "speed.json").write_text(json.dumps(report))
    speed_benchmark.main(common + ["--only", "CMLM 10 it."])
    assert [r["config"] for r in json.load(open(out / "speed.json"))["rows"]] == ["AR beam 5", "CMLM 10 it."]
    assert "Kept from" not in (out / "speed.md").read_text()
    # nor does one of other data or checkpoints, or of models of another size or batch
    speed_benchmark.main(common + ["--only", "AR beam 5"])
    kept = json.load(open(out / "speed.json"))
    kept["rows"].append(dict(kept["rows"][0], config="CMLM 10 it."))
    for key, other in (("data", "/other/data-bin"), ("fastdiss", "/other/ckpt.pt"), ("size", "iwslt"),
                       ("max_tokens", 16384)):
        (out / "speed.json").write_text(json.dumps(dict(kept, settings=dict(kept["settings"], **{key: other}))))
        speed_benchmark.main(common + ["--only", "AR beam 5"])
        assert [r["config"] for r in json.load(open(out / "speed.json"))["rows"]] == ["AR beam 5"], key


def test_the_reference_row_is_timed_again_at_the_end_and_the_drift_reported(monkeypatch, tmp_path):
    """A host whose speed drifts during the run: AR beam 5 is timed first and after the last row,
    its figures are the median of all its runs, and the report names both medians."""
    work, out = benchmark_work_folder(tmp_path)
    speeds = iter([[100.0, 110.0, 120.0], [50.0], [150.0, 160.0, 170.0]])  # AR, FastDiSS, AR again

    def fake_measure(args, data, ckpt, model, extra, gen_path):
        write_one_hypothesis(gen_path)
        return [(v, 4 * v, v / 2, 2048, 0) for v in next(speeds)], "float32"

    monkeypatch.setattr(speed_benchmark, "measure_in_own_processes", fake_measure)
    monkeypatch.setattr(speed_benchmark, "checkpoint_updates", lambda path: 42)
    monkeypatch.setattr(speed_benchmark.subprocess, "run", lambda *a, **k: None)  # the profile
    speed_benchmark.main(["--work", str(work), "--out", str(out), "--no-train", "--train-updates", "42",
                          "--threads", "2", "--only", "FastDiSS 5 st. (L=1)"])
    rows = {r["config"]: r for r in json.load(open(out / "speed.json"))["rows"]}
    ar = rows["AR beam 5"]
    assert (ar["sentences_per_s_first"], ar["sentences_per_s_last"]) == (110.0, 160.0)
    assert ar["sentences_per_s"] == 135.0 and ar["timed_runs"] == 6  # the median of all six runs
    report = (out / "speed.md").read_text()
    assert "110.0 and 160.0 sentences/s (the host's speed moved +45 % during the run)" in report
    assert "| FastDiSS 5 st. (L=1) |" in report and "| 0.37x |" in report  # 50 / 135
    import matplotlib.pyplot as plt

    # the report (and its plot) is rewritten after every row: no figure may stay open in between
    assert plt.get_fignums() == []


def test_the_report_names_the_host_and_how_each_model_was_trained(monkeypatch, tmp_path):
    """Speed tables of two hosts are not comparable: the title names the CPU. A FastDiSS
    checkpoint trained with --amp (bfloat16 autocast on a CPU) is said to be, next to peers that
    fairseq trains in float32 on a CPU whatever the flag; one that cannot be read gets no claim.
    The training throughput of FastDiSS's own log (--fastdiss-log) gets no ratio to AR's."""
    work, out = benchmark_work_folder(tmp_path)

    def fake_measure(args, data, ckpt, model, extra, gen_path):
        write_one_hypothesis(gen_path)
        return [(10.0, 40.0, 5.0, 2048, 0)], "float32"

    monkeypatch.setattr(speed_benchmark, "measure_in_own_processes", fake_measure)
    monkeypatch.setattr(speed_benchmark, "checkpoint_updates", lambda path: 42)
    monkeypatch.setattr(speed_benchmark.subprocess, "run", lambda *a, **k: None)  # the profile
    wps = "".join(f"INFO:train_inner:epoch 001: wps={v}, ups=1.0\n" for v in (1, 2000, 2000))
    (work / "peer_ar.log").write_text(wps)
    (work / "fastdiss.log").write_text(wps.replace("2000", "3000"))
    args = ["--work", str(work), "--out", str(out), "--no-train", "--train-updates", "42", "--threads", "2",
            "--only", "FastDiSS 5 st. (L=1)", "--fastdiss-log", str(work / "fastdiss.log")]
    for optimizer, says in (("AMPOptimizer", "Training precision: FastDiSS with --amp (bfloat16 autocast"),
                            ("FairseqAdam", "Training precision: every model in float32."),
                            (None, None)):
        monkeypatch.setattr("fastdiss_fairseq.resume_check.stored_optimizer_name", lambda path: optimizer)
        speed_benchmark.main(args)
        report = (out / "speed.md").read_text()
        host = speed_benchmark.host_name("cpu")
        assert host and report.startswith(f"# Decoding speed and quality on de-en/test (CPU: {host}, batch size 100")
        assert (says in report) if says else "Training precision" not in report
        assert f"Command: `python recipes/speed_benchmark.py --work {work} --out {out} --no-train" in report
        assert "--only 'FastDiSS 5 st. (L=1)'" in report and "Kept from" not in report  # every row re-measured
        # another run's log (perhaps under --amp) is quoted, never set against AR's as a ratio
        assert "): ar 2000, fastdiss 3000." in report and "x AR" not in report
        assert json.load(open(out / "speed.json"))["settings"]["fastdiss_trained_with_amp"] == (
            None if optimizer is None else optimizer == "AMPOptimizer")
