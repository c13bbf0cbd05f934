"""recipes/generate_many.py: several fairseq-generate runs in one process give what the stock CLI
gives run by run (hypotheses and timer line), whatever ran before them in the process."""

import json
import os
import subprocess
import sys

from conftest import ROOT, USER_DIR, run_cli


def gen_args(data, ckpt, steps, *extra):
    return [str(data), "--user-dir", USER_DIR, "--task", "fastdiss_translation", "--path", str(ckpt),
            "--decoding-steps", str(steps), "--length-beam", "2", "--remove-bpe", "--seed", "1", "--cpu",
            "--max-tokens", "4000", *extra]


def hypotheses(text):
    return sorted(line for line in text.splitlines() if line.startswith(("D-", "H-", "P-")))


def test_runs_in_one_process_match_the_cli_run_by_run(tiny_data, tiny_model, tmp_path):
    configs = {"k2": gen_args(tiny_data, tiny_model[0], 2),
               "k1_recompute": gen_args(tiny_data, tiny_model[0], 1, "--inference-self-conditioning", "recompute")}
    # in one process, in the other order than below, each with its log and header line
    runs = [{"args": args, "out": str(tmp_path / f"{name}.txt"), "log": str(tmp_path / f"{name}.log"),
             "header": f"# {name}"} for name, args in reversed(configs.items())]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(runs))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "generate_many.py"), str(spec)],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, args in configs.items():
        alone = run_cli("generate", *args).stdout
        together = (tmp_path / f"{name}.txt").read_text()
        assert hypotheses(together) == hypotheses(alone) and len(hypotheses(alone)) > 0
        assert "Generate test with beam=" in together
        log = (tmp_path / f"{name}.log").read_text()
        assert log.startswith(f"# {name}\n") and " sentences/s" in log
        assert "loading model(s)" in log and log.count("Translated ") == 1  # its own lines only


def test_a_failing_run_stops_the_process_with_its_error(tiny_data, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps([{"args": gen_args(tiny_data, tmp_path / "missing.pt", 2),
                                 "out": str(tmp_path / "o.txt"), "log": str(tmp_path / "o.log")}]))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "generate_many.py"), str(spec)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "cannot read checkpoint" in proc.stderr and "missing.pt" in proc.stderr
