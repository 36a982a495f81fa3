"""benchmarks/serving/pooled.py: multimodel runs pooled into paired TTFT ratios per model and
load. Pure Python (runs in CI without transformers)."""

import json
import os
import sys

SOURCE_DIR = os.environ.get("KVPAGER_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "benchmarks", "serving"))

import pooled  # noqa: E402


def _run(model_ttfts, phase_s=10.0):
    """A multimodel report: per model, [(request_id, submitted, stock ttft, kvpager ttft)]."""
    runs = {"stock": [], "kvpager": []}
    for model, reqs in model_ttfts.items():
        for memory, column in (("stock", 2), ("kvpager", 3)):
            runs[memory].append({"model": model, "requests": [
                {"request_id": r[0], "submitted": r[1], "ttft_s": r[column]} for r in reqs]})
    return {"config": {"phase_s": phase_s}, "runs": runs}


def test_requests_pair_by_id_and_fall_into_their_phase():
    report = _run({
        "a": [("a-0", 1.0, 4.0, 1.0), ("a-1", 12.0, 0.2, 0.1), ("a-2", 25.0, 0.3, 0.3)],
        "b": [("b-0", 5.0, 0.1, 0.2), ("b-1", 15.0, 2.0, 1.0), ("b-2", 21.0, 0.1, 0.1)],
    })
    pairs = pooled.pairs_by_model_and_phase([report, report], "stock")
    # two models, so the quiet phase starts at 20 s; model b peaks in [10, 20)
    assert pairs[("a", "peak")] == [(4.0, 1.0)] * 2
    assert pairs[("a", "others")] == [(0.2, 0.1)] * 2
    assert pairs[("a", "low")] == [(0.3, 0.3)] * 2
    assert pairs[("b", "others")] == [(0.1, 0.2)] * 2
    assert pairs[("b", "peak")] == [(2.0, 1.0)] * 2


def test_a_request_failed_on_either_side_is_not_a_pair_and_missing_memories_are_skipped():
    report = _run({"a": [("a-0", 25.0, float("nan"), 0.1), ("a-1", 26.0, 0.2, 0.1)]}, phase_s=10)
    only_stock = {"config": {"phase_s": 10}, "runs": {"stock": report["runs"]["stock"]}}
    pairs = pooled.pairs_by_model_and_phase([report, only_stock], "stock")
    assert pairs == {("a", "low"): [(0.2, 0.1)]}
    assert pooled.pairs_by_model_and_phase([report], "stock-whole") == {}


def test_ratio_interval_and_geomean(tmp_path):
    reqs = [(f"a-{i}", 30.0 + i, 0.1 * (1 + i % 3), 0.1) for i in range(30)]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(_run({"a": reqs})))
    out = tmp_path / "rows.json"
    assert pooled.main([str(path), "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["phase"] == "low" and row["pairs"] == 30
    assert abs(row["mean_ratio"] - 2.0) < 1e-9  # (1 + 2 + 3) / 3
    lo, hi = row["interval_95"]
    assert lo < 2.0 < hi and lo > 1.0
    assert abs(row["geomean_ratio"] - 6 ** (1 / 3)) < 1e-9


def test_no_comparable_run_is_an_error(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"config": {"phase_s": 10}, "runs": {"kvpager": []}}))
    assert pooled.main([str(path)]) == 1
    assert "no run in these files has both stock and kvpager" in capsys.readouterr().err
