"""recipes/gpu/run_gpu_lease.sh (issues 4 and 5 in one GPU lease) run end to end on the CPU with
small models on tiny data: the same pipeline a lent GPU runs, and what it brings back."""

import json
import tarfile

from conftest import run_gpu_script


def test_the_gpu_lease_runs_both_checks_end_to_end_on_the_cpu(tiny_data, tmp_path):
    run_gpu_script("run_gpu_lease", tiny_data, tmp_path, ARCH="fastdiss_small", SIZE="small", UPDATES="2",
                   CURVE_EVERY="1", MAX_TOKENS="2048", BATCH="50", STEPS="1 2", JOBS="2")
    out = tmp_path / "out"
    # What comes back: at most 8 files, the machine, both reports and the packed run.
    back = sorted(p.name for p in out.iterdir())
    assert {"machine.txt", "ablation.md", "ablation.tgz", "speed.md", "speed.json", "gpu_lease.tgz"} <= set(back)
    assert len([n for n in back if not n.startswith("speed_profile")]) <= 8  # the profile is CPU-only
    ablation = (out / "ablation.md").read_text()
    assert "| baseline |" in ablation and "| scp_mans |" in ablation and "| scp |" not in ablation
    speed = json.load(open(out / "speed.json"))
    assert speed["settings"]["fastdiss_updates"] == 2 and speed["settings"]["peer_updates"] == {"ar": 2, "cmlm": 2}
    # the default rows (SPEED_ONLY) and the reference; the FastDiSS ones decode the ablation's SCP+MANS model
    assert [r["config"] for r in speed["rows"]] == ["AR beam 5", "AR greedy", "CMLM 10 it.", "FastDiSS 2 st. (L=1)",
                                                    "FastDiSS 5 st. (L=1)", "FastDiSS 5 st. (L=5)"]
    # the peers' training logs hold fairseq's progress lines (the first GPU lease's were empty)
    assert "done training" in (tmp_path / "work" / "peer_ar.log").read_text()
    with tarfile.open(out / "gpu_lease.tgz") as tar:
        names = tar.getnames()
        gen = tar.extractfile("./scp_mans.seed1.gen2.txt").read().decode()
    assert "./report/ablation.json" in names and "./peer_ar.log" in names
    assert not any(n.endswith(".pt") for n in names)
    # the hypotheses only, enough to score a decode the deadline cut off
    assert gen.count("\nD-") + gen.startswith("D-") == 13 and "\nS-" not in gen
