"""The sweep summary callback: ``summary.csv`` and, for sweeps over ``seed``, ``summary_seeds.csv``."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats

from privacy_attacks.callbacks.sweep_summary import (
    SweepSummary,
    collect_rows,
    collect_sweep,
    format_mean_ci,
    read_earlier,
    record_earlier,
    seed_summary,
    summarise,
)


def make_sweep(root: Path, jobs: list[tuple[list[str], dict]]) -> Path:
    """A fake Hydra sweep folder: job ``i`` holds ``metrics.json`` and ``.hydra/overrides.yaml``."""
    for i, (overrides, metrics) in enumerate(jobs):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (job / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_jobs_of_an_earlier_sweep_into_the_same_folder_are_left_out(tmp_path: Path, caplog):
    """A 3-job sweep, then a 1-job sweep into the same folder: its summary holds its own job only."""
    sweep = make_sweep(tmp_path / "sweep", [([f"tv_lambda={v}"], {"acc": v}) for v in (0.0, 0.1, 0.2)])
    earlier = {str(p): p.stat().st_mtime for p in sweep.glob("*/metrics.json")}
    job = sweep / "0" / "metrics.json"
    job.write_text(json.dumps({"acc": 0.5}))
    os.utime(job, (earlier[str(job)] + 10, earlier[str(job)] + 10))  # written again by the new sweep
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- tv_lambda=0.3\n")
    rows = summarise(sweep, {"metric": "acc"}, earlier)
    assert [(r["job"], r["tv_lambda"], r["acc"]) for r in rows] == [("0", 0.3, 0.5)]
    assert "2 job folder(s) of an earlier sweep" in caplog.text and "1, 2" in caplog.text
    assert len(summarise(sweep, {"metric": "acc"})) == 3  # without a record of the sweep's start: every job


def test_a_sweep_into_the_folder_of_an_earlier_one_moves_it_whole_to_earlier(tmp_path: Path, caplog):
    """Three seeds interrupted after one, then the two left into the same folder: the new jobs are numbered from 0
    again, and the earlier sweep (its finished job, its partial summary, its multirun.yaml) is moved aside whole, so
    that no earlier job is written over and the new summary holds the new jobs alone."""
    sweep = make_sweep(tmp_path / "sweep", [(["seed=0"], {"acc": 0.5})])
    (sweep / "summary.md").write_text("Partial: ...")
    (sweep / "multirun.yaml").write_text("{}")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "summary": {"metric": "acc"}})
    callback = SweepSummary()
    callback.on_multirun_start(config)
    aside = sweep / "earlier" / "1"
    assert sorted(p.name for p in sweep.iterdir()) == [".summary_earlier.json", "earlier"]
    assert read_earlier(sweep) == {}  # the new sweep's record: no earlier job beside its own
    assert json.loads((aside / "0" / "metrics.json").read_text()) == {"acc": 0.5}
    assert (aside / "summary.md").read_text() == "Partial: ..." and (aside / "multirun.yaml").exists()
    assert "held an earlier sweep: moved to" in caplog.text
    (sweep / "multirun.yaml").write_text("{}")  # as Hydra writes it when the new sweep begins
    make_sweep(sweep, [(["seed=1"], {"acc": 0.7}), (["seed=2"], {"acc": 0.8})])  # the new sweep's jobs 0 and 1
    callback.on_multirun_end(config)
    assert [row["seed"] for row in csv.DictReader(open(sweep / "summary.csv"))] == ["1", "2"]
    SweepSummary().on_multirun_start(config)  # and a third sweep: the second goes to earlier/2/, beside the first
    assert sorted(p.name for p in (sweep / "earlier").iterdir()) == ["1", "2"]
    assert (sweep / "earlier" / "2" / "summary.csv").exists() and (aside / "0" / "metrics.json").exists()
    SweepSummary().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "new")}}}))
    assert not (tmp_path / "new" / "earlier").exists()  # a new folder: nothing to move
    other = tmp_path / "project"  # no sweep began here (hydra.sweep.dir=.): its files stay where they are
    make_sweep(other, [(["seed=0"], {"acc": 0.5})])
    (other / "notes.txt").write_text("mine")
    SweepSummary().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(other)}}}))
    assert (other / "notes.txt").exists() and (other / "0" / "metrics.json").exists()
    assert not (other / "earlier").exists()
    # A sweep has run there since (its multirun.yaml): its own entries move, the folder's other things stay.
    (other / "multirun.yaml").write_text("{}")
    for name in (".git", "src", "7", "README.md"):  # "7": a numbered folder that is not a job's (no .hydra/)
        (other / name).mkdir() if "." not in name or name == ".git" else (other / name).write_text("x")
    SweepSummary().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(other)}}}))
    left = sorted(p.name for p in other.iterdir())
    assert left == [".git", ".summary_earlier.json", "7", "README.md", "earlier", "notes.txt", "src"]
    assert sorted(p.name for p in (other / "earlier" / "1").iterdir()) == [
        ".summary_earlier.json",
        "0",
        "multirun.yaml",
    ]


def test_summarising_a_folder_again_leaves_out_the_same_earlier_jobs_as_the_sweeps_end(tmp_path: Path, capsys):
    """Six seeds, then a sweep of three into the same folder: ``python -m privacy_attacks.summarise`` sums up the
    three, from the record its start left, not the three stale jobs beside them."""
    from privacy_attacks.summarise import main

    sweep = make_sweep(tmp_path / "sweep", [([f"seed={s}"], {"acc": 0.5}) for s in range(6)])
    OmegaConf.save({"summary": {"metric": "acc"}}, sweep / "multirun.yaml")
    earlier = record_earlier(sweep)  # the new sweep begins
    for job in range(3):
        metrics = sweep / str(job) / "metrics.json"
        metrics.write_text(json.dumps({"acc": 0.9 + job / 100}))
        os.utime(metrics, (earlier[str(metrics)] + 10, earlier[str(metrics)] + 10))
    main([str(sweep)])
    assert [row["acc"] for row in csv.DictReader(open(sweep / "summary.csv"))] == ["0.9", "0.91", "0.92"]
    record_earlier(sweep)  # a later sweep begins, and no job of it has finished yet
    with pytest.raises(SystemExit, match=r"no job of .* last sweep has finished .*\(6 of an earlier sweep"):
        main([str(sweep)])
    for job in range(6):
        (sweep / str(job) / "metrics.json").unlink()
    record_earlier(sweep)  # a sweep into a folder of no finished job replaces the record too
    assert read_earlier(sweep) == {}


def test_override_values_are_read_as_hydra_reads_them(tmp_path: Path):
    sweep = make_sweep(tmp_path / "sweep", [(["tv_lambda=1e-3", "init=on", "layers=[1,2]", "prior=null"], {"acc": 1})])
    row = collect_rows(sweep)[0]
    assert (row["tv_lambda"], row["init"], row["layers"], row["prior"]) == (0.001, "on", [1, 2], None)


def ci95(values: list[float]) -> float:
    x = np.asarray(values)
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


ACC = {"kl": [0.90, 0.92, 0.94], "ce": [0.80, 0.85, 0.87]}


@pytest.fixture
def seed_sweep(tmp_path: Path) -> Path:
    """2 settings (loss=kl, loss=ce) x 3 seeds, jobs interleaved in Hydra's order (seed varies fastest)."""
    jobs = []
    for loss in ("kl", "ce"):
        for seed, acc in enumerate(ACC[loss]):
            metrics = {"test/acc": acc, "queries/used": 1000, "time/attack_s": 10.0 + seed, "note": "x"}
            jobs.append(([f"loss={loss}", "num_queries=1000", f"seed={seed}"], metrics))
    return make_sweep(tmp_path / "sweep", jobs)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_collect_sweep_records_override_keys(seed_sweep: Path):
    rows, override_keys = collect_sweep(seed_sweep)
    assert override_keys == ["loss", "num_queries", "seed"]
    assert rows == collect_rows(seed_sweep)
    assert rows[0] == {
        "job": "0",
        "loss": "kl",
        "num_queries": 1000,
        "seed": 0,
        "test/acc": 0.90,
        "queries/used": 1000,
        "time/attack_s": 10.0,
        "note": "x",
    }


def test_seed_summary_means_and_ci(seed_sweep: Path):
    rows, override_keys = collect_sweep(seed_sweep)
    summaries = seed_summary(rows, override_keys)
    assert [(s["loss"], s["num_queries"]) for s in summaries] == [("kl", 1000), ("ce", 1000)]
    assert list(summaries[0]) == [
        "loss",
        "num_queries",
        "n_seeds",
        "test/acc/mean",
        "test/acc/ci95",
        "queries/used/mean",
        "queries/used/ci95",
        "time/attack_s/mean",
        "time/attack_s/ci95",
    ]
    for summary in summaries:
        values = ACC[summary["loss"]]
        assert summary["n_seeds"] == 3
        assert summary["test/acc/mean"] == pytest.approx(np.mean(values))
        assert summary["test/acc/ci95"] == pytest.approx(ci95(values))
        assert summary["queries/used/mean"] == 1000
        assert summary["queries/used/ci95"] == 0
    # The hand computation of the brief: 0.90, 0.92, 0.94 -> 0.92 ± t(0.975, 2) * 0.02 / sqrt(3).
    assert summaries[0]["test/acc/mean"] == pytest.approx(0.92)
    assert summaries[0]["test/acc/ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3))


def test_summarise_writes_seed_summary(seed_sweep: Path, capsys):
    rows = summarise(seed_sweep, {"metric": "test/acc", "columns": ["loss", "test/acc"]})
    assert len(rows) == 6
    assert len(read_csv(seed_sweep / "summary.csv")) == 6
    table = read_csv(seed_sweep / "summary_seeds.csv")
    assert list(table[0]) == [
        "loss",
        "num_queries",
        "n_seeds",
        "test/acc/mean",
        "test/acc/ci95",
        "queries/used/mean",
        "queries/used/ci95",
        "time/attack_s/mean",
        "time/attack_s/ci95",
    ]
    assert [r["loss"] for r in table] == ["kl", "ce"]
    assert [int(r["n_seeds"]) for r in table] == [3, 3]
    assert float(table[0]["test/acc/mean"]) == pytest.approx(0.92)
    assert float(table[1]["test/acc/ci95"]) == pytest.approx(ci95(ACC["ce"]))
    # The printed seed table: the settings' overrides, n_seeds and mean ± ci95 of the chosen metrics only.
    expected = format_mean_ci(0.92, ci95(ACC["kl"]))
    assert expected == f"0.9200 ± {ci95(ACC['kl']):.4f}"
    out = capsys.readouterr().out
    assert "| loss | n_seeds | test/acc |" in out  # num_queries, the same in every setting, stays in the CSV
    assert f"| kl | 3 | {expected} |" in out
    md = (seed_sweep / "summary.md").read_text()
    assert "Best job by test/acc: 2" in md
    assert f"| kl | 3 | {expected} |" in md


def test_seed_table_defaults_to_metrics_not_ending_in_s(seed_sweep: Path, capsys):
    summarise(seed_sweep, None)
    out = capsys.readouterr().out
    assert "| loss | n_seeds | test/acc | queries/used |" in out
    assert "| kl | 3 | " in out


def test_no_seed_override_writes_no_seed_summary(tmp_path: Path):
    sweep = make_sweep(
        tmp_path / "sweep", [([f"loss={loss}"], {"test/acc": acc}) for loss, acc in [("kl", 0.9), ("ce", 0.8)]]
    )
    rows = summarise(sweep, {"metric": "test/acc"})
    assert [r["loss"] for r in rows] == ["kl", "ce"]
    assert (sweep / "summary.csv").exists()
    assert not (sweep / "summary_seeds.csv").exists()
    assert "Across seeds" not in (sweep / "summary.md").read_text()


def test_one_seed_per_setting_writes_no_seed_summary(tmp_path: Path):
    sweep = make_sweep(tmp_path / "sweep", [([f"loss={loss}", "seed=0"], {"test/acc": 0.9}) for loss in ("kl", "ce")])
    summarise(sweep, None)
    assert not (sweep / "summary_seeds.csv").exists()


def test_single_seed_setting_gets_n_seeds_1(tmp_path: Path):
    jobs = [(["loss=kl", f"seed={s}"], {"test/acc": a}) for s, a in enumerate([0.90, 0.92, 0.94])]
    jobs.append((["loss=ce", "seed=0"], {"test/acc": 0.8}))
    sweep = make_sweep(tmp_path / "sweep", jobs)
    summarise(sweep, None)
    table = read_csv(sweep / "summary_seeds.csv")
    assert [(r["loss"], int(r["n_seeds"])) for r in table] == [("kl", 3), ("ce", 1)]
    assert float(table[1]["test/acc/mean"]) == pytest.approx(0.8)
    assert math.isnan(float(table[1]["test/acc/ci95"]))  # written as "nan"
    rows, override_keys = collect_sweep(sweep)
    single = seed_summary(rows, override_keys)[1]
    assert single["n_seeds"] == 1 and math.isnan(single["test/acc/ci95"])


def test_n_seeds_counts_distinct_seeds_and_n_jobs_appears_when_a_setting_has_more_jobs(tmp_path: Path, capsys):
    jobs = [(["loss=kl", f"seed={s}"], {"test/acc": a}) for s, a in [(0, 0.90), (1, 0.92), (1, 0.94)]]  # a rerun
    jobs += [(["loss=ce", f"seed={s}"], {"test/acc": a}) for s, a in [(0, 0.80), (1, 0.84)]]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    summarise(sweep, None)
    table = read_csv(sweep / "summary_seeds.csv")
    assert list(table[0])[:4] == ["loss", "n_seeds", "n_jobs", "test/acc/mean"]
    assert [(r["loss"], int(r["n_seeds"]), int(r["n_jobs"])) for r in table] == [("kl", 2, 3), ("ce", 2, 2)]
    assert float(table[0]["test/acc/mean"]) == pytest.approx(0.92)  # the mean is still over the jobs
    assert "| loss | n_seeds | n_jobs | test/acc |" in capsys.readouterr().out
    rows, override_keys = collect_sweep(sweep)
    assert [(s["n_seeds"], s["n_jobs"]) for s in seed_summary(rows, override_keys)] == [(2, 3), (2, 2)]


def test_format_mean_ci():
    assert format_mean_ci(0.91142, 0.00311) == "0.9114 ± 0.0031"
    assert format_mean_ci(0.8, float("nan")) == "0.8000"
    assert format_mean_ci(float("nan"), float("nan")) == ""


def test_scenario_keys_give_the_attacker_and_the_attacker_by_scenario_intervals(tmp_path: Path, capsys):
    """2 scenarios (private_seed) x 3 attacker seeds: one setting; ci95 pools the spread within each scenario, and
    ci95_scenario is the interval over the two scenarios' means, which is wider when scenarios differ most."""
    psnr = {0: [30.0, 30.2, 29.8], 1: [20.0, 20.3, 19.7]}
    jobs = [
        ([f"private_seed={s}", f"seed={a}"], {"recon/psnr": value})
        for s, values in psnr.items()
        for a, value in enumerate(values)
    ]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    (summary,) = seed_summary(*collect_sweep(sweep), scenario=["private_seed"])
    assert (summary["n_seeds"], summary["n_jobs"], summary["n_scenarios"]) == (3, 6, 2)
    assert summary["recon/psnr/mean"] == pytest.approx(25.0)
    within = sum((v - np.mean(vs)) ** 2 for vs in psnr.values() for v in vs) / 4  # df = 6 jobs - 2 scenarios
    assert summary["recon/psnr/ci95"] == pytest.approx(stats.t.ppf(0.975, 4) * math.sqrt(within / 6))
    assert summary["recon/psnr/ci95_scenario"] == pytest.approx(ci95([30.0, 20.0]))
    assert summary["recon/psnr/ci95_scenario"] > 10 * summary["recon/psnr/ci95"]
    # Without naming the scenario the two draws are two settings, each with its attacker interval only.
    assert [s["private_seed"] for s in seed_summary(*collect_sweep(sweep))] == [0, 1]
    summarise(sweep, {"metric": "recon/psnr", "scenario": ["private_seed"], "columns": ["seed", "recon/psnr"]})
    out = capsys.readouterr().out
    assert "| job | private_seed | seed | recon/psnr |" in out  # each job's draw in the per-job table
    assert "± over the scenarios' means, private_seed" in out and "| n_seeds | n_jobs | n_scenarios |" in out
    assert f"25.0000 ± {summary['recon/psnr/ci95']:.4f} (± {summary['recon/psnr/ci95_scenario']:.4f})" in out


def test_the_best_setting_is_named_by_its_mean_over_seeds_beside_the_luckiest_job(tmp_path: Path, capsys):
    acc = {"kl": [0.90, 0.91, 0.92], "mse": [0.80, 0.81, 0.95]}  # mse has the best single job, kl the best mean
    jobs = [([f"loss={loss}", f"seed={s}"], {"acc": v}) for loss, values in acc.items() for s, v in enumerate(values)]
    summarise(make_sweep(tmp_path / "sweep", jobs), {"metric": "acc"})
    out = capsys.readouterr().out
    assert "Best job by acc: 5 (0.95" in out
    assert f"Best setting by mean acc: loss=kl ({format_mean_ci(0.91, ci95(acc['kl']))}, 3 seeds)" in out


def test_with_unequal_scenarios_the_mean_is_the_scenario_means_mean_the_scenario_interval_is_centred_on(tmp_path):
    """A partial sweep (or a metric missing in some jobs): 3 jobs of one evaluation set, 1 of the other."""
    auc = {0: [0.90, 0.91, 0.92], 1: [0.50, None, None]}
    jobs = [
        ([f"eval_seed={e}", f"seed={a}"], {"mia/auc": value})
        for e, values in auc.items()
        for a, value in enumerate(values)
    ]
    (summary,) = seed_summary(*collect_sweep(make_sweep(tmp_path / "sweep", jobs)), scenario=["eval_seed"])
    assert summary["mia/auc/mean"] == pytest.approx((0.91 + 0.50) / 2)  # not 0.8075, the mean of the four jobs
    assert summary["mia/auc/ci95_scenario"] == pytest.approx(ci95([0.91, 0.50]))


def test_a_scenario_key_fixed_on_the_command_line_is_one_draw_not_an_interval(tmp_path: Path):
    """``private_seed=0`` set for every job: the setting's attacker interval only, no count or interval of draws."""
    jobs = [(["private_seed=0", f"seed={a}"], {"recon/psnr": 30.0 + a}) for a in range(3)]
    (summary,) = seed_summary(*collect_sweep(make_sweep(tmp_path / "sweep", jobs)), scenario=["private_seed"])
    assert summary["n_seeds"] == 3 and "n_scenarios" not in summary and "recon/psnr/ci95_scenario" not in summary
    assert summary["recon/psnr/ci95"] == pytest.approx(ci95([30.0, 31.0, 32.0]))
    summarise(tmp_path / "sweep", {"metric": "recon/psnr", "scenario": ["private_seed"]})
    assert "Across seeds, mean ± 95% CI over seeds" in (tmp_path / "sweep" / "summary.md").read_text()


def test_a_dotted_scenario_key_groups_the_targets_draws(tmp_path: Path):
    """``summary.scenario: [target.seed]``: jobs against three targets form one setting per query budget."""
    jobs = [
        ([f"query_budget={budget}", f"target.seed={t}", f"seed={a}"], {"student/agreement": 0.9 + 0.01 * t + 0.001 * a})
        for budget in (100, 1000)
        for t in range(3)
        for a in range(2)
    ]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    summaries = seed_summary(*collect_sweep(sweep), scenario=["target.seed"])
    assert [(s["query_budget"], s["n_scenarios"], s["n_jobs"]) for s in summaries] == [(100, 3, 6), (1000, 3, 6)]
    assert summaries[0]["student/agreement/ci95_scenario"] == pytest.approx(ci95([0.9005, 0.9105, 0.9205]))


def test_each_finished_job_leaves_a_partial_summary_and_a_folder_can_be_summarised_again(tmp_path: Path, capsys):
    """After each job the summary files hold the jobs finished so far (an interrupted or failing sweep keeps them);
    ``python -m privacy_attacks.summarise <folder>`` summarises the folder as the sweep's end would have."""
    from privacy_attacks.summarise import main

    sweep = make_sweep(tmp_path / "sweep", [(["loss=kl", f"seed={s}"], {"acc": 0.9 + s / 100}) for s in range(2)])
    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(sweep)}, "mode": "MULTIRUN"}, "summary": {"metric": "acc"}}
    )
    SweepSummary().on_job_end(config)
    assert (sweep / "summary.md").read_text().startswith("Partial: the 2 job(s) finished so far.")
    assert [r["seed"] for r in csv.DictReader(open(sweep / "summary.csv"))] == ["0", "1"]
    assert capsys.readouterr().out == ""  # quiet: the table is printed once, at the end
    single = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}, "mode": "RUN"}})
    SweepSummary().on_job_end(single)
    assert not (tmp_path / "none").exists()
    OmegaConf.save({"summary": {"metric": "acc"}}, sweep / "multirun.yaml")
    main([str(sweep)])
    assert (
        not (sweep / "summary.md").read_text().startswith("Partial") and "Best job by acc: 1" in capsys.readouterr().out
    )
    with pytest.raises(SystemExit, match="no multirun.yaml"):
        main([str(tmp_path)])
