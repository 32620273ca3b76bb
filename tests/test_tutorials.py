"""The tutorials under tutorials/ run end to end with their tiny settings (each in a subprocess,
as a reader runs them) and print numbers that make sense: accuracies in [0, 1], robust accuracy
no higher than clean accuracy, models that learned (above chance), and robustness where the
method is supposed to buy it."""
from __future__ import annotations

import os
import re
import subprocess
import sys


from helpers import REPO

RESULT = re.compile(r"^RESULT (?:(\w+) )?clean_acc=([0-9.]+) robust_acc=([0-9.]+)", re.M)


def _run(script: str, *args: str) -> dict[str, tuple[float, float]]:
    """Run tutorials/<script> --tiny from outside the checkout's root; return {tag: (clean, robust)}."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(REPO / "tutorials" / script), "--tiny", *args], cwd=REPO / "docs",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    found = {tag or "model": (float(c), float(r)) for tag, c, r in RESULT.findall(proc.stdout)}
    assert found, f"{script} printed no RESULT line:\n{proc.stdout[-3000:]}"
    for tag, (clean, robust) in found.items():
        assert 0.0 <= robust <= clean <= 1.0, (script, tag, clean, robust)
    return found


def test_evaluate_your_model_prints_the_suite_report():
    clean, robust = _run("evaluate_your_model.py")["model"]
    assert clean > 0.8  # an MLP on digits after a few epochs of PGD training (chance: 0.1)
    assert 0.05 < robust < clean - 0.1  # PGD training buys some robustness; the attacks still find points


def test_ard_on_digits_teacher_then_student():
    r = _run("ard_digits.py")
    teacher, student = r["teacher"], r["student"]
    assert teacher[0] > 0.6 and teacher[1] > 0.2, teacher  # adversarially trained teacher
    assert student[0] > 0.3 and student[1] > 0.1, student  # the student learned from soft labels alone


def test_robust_fewshot_on_omniglot_adversarial_querying_beats_natural():
    r = _run("robust_fewshot_omniglot.py", "--compare-natural")
    aq, natural = r["aq"], r["natural"]
    assert aq[0] > 0.4 and natural[0] > 0.4, r  # 5-way on unseen alphabets: chance is 0.2
    assert aq[1] > natural[1] + 0.1, r  # adversarial querying keeps robustness that natural meta-training lacks
