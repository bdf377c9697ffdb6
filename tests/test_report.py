"""report.py: every section present, filled from real stage outputs, or naming the command that makes it."""
from __future__ import annotations

import re
import shutil

import pytest

import baselines
import cross_validate
import predict
import report
import shap_values
import statistic
from utils.labels import CLASSES


def test_empty_report_names_each_missing_stage(copy_run, prepared, trained, tmp_path):
    path = report.main(["--data-dir", str(prepared), "--run", str(copy_run(trained, tmp_path / "m")),
                        "--results-dir", str(tmp_path / "r")])
    text = path.read_text()
    for title in report.TITLES:
        assert f"## {title}\n" in text, title
    for script in ("statistic.py", "baselines.py", "predict.py", "cross_validate.py", "lead_study.py",
                   "shap_values.py"):
        assert f"run `python {script}" in text, script
    # each command writes where this report reads (its --results-dir), so that running it fills the section
    commands = re.findall(r"run `(python [^`]*)`", text)
    assert len(commands) >= 6 and all(c.endswith(f" --results-dir {tmp_path / 'r'}") for c in commands), commands


@pytest.mark.slow
def test_full_report(prepared, trained, lead_study_run, tiny, tmp_path):
    # the model's own database (a copy would be another database: results are filed by identity);
    # baselines.py adds its feature cache there, which no other output depends on
    data, results = prepared, tmp_path / "results"
    model = trained["model_path"]
    statistic.main(["--data-dir", str(data), "--results-dir", str(results)])
    for split in ([], ["--cv"]):
        baselines.main(["--data-dir", str(data), "--classifier", "LR", "--results-dir", str(results),
                        "--num-workers", "1", "--n-bootstrap", "50", "--no-figures", *split])
    predict.main(["--run", str(model), "--results-dir", str(results), "--n-bootstrap", "50", "--num-workers", "0"])
    shap_values.main(["--run", str(model), "--results-dir", str(results),
                      "--background", "8", "--n-explain", "4", "--n-samples", "8"])
    cross_validate.main(["--data-dir", str(data), *tiny, "--epochs", "1", "--folds", "3", "--n-bootstrap", "20",
                         "--runs-dir", str(tmp_path / "models"), "--results-dir", str(results)])
    for name in ("lead_study.csv", "lead_study.md", "lead_study.png", "lead_study.json"):  # the record of its data too
        shutil.copy(lead_study_run["work"] / "results" / prepared.name / name, results / prepared.name / name)

    text = report.main(["--data-dir", str(data), "--run", str(model), "--results-dir", str(results)]).read_text()
    assert text.count("Not available") == 2 and "--external-data-dir" in sections_text(text, "External validation")
    assert "cross_database.py" in sections_text(text, "Cross-database matrix")
    sections = dict(zip(report.TITLES, re.split(r"^## .*\n", text, flags=re.M)[1:]))
    assert set(sections) == set(report.TITLES)
    assert "| All | 200 (100.0 %)" in sections["Dataset"]
    assert sections["Expert-feature baselines"].count("\n| LR |") == 2  # single split and 10-fold CV
    deep = sections["Deep model (12 leads), test fold"]
    assert all(f"| {c} |" in deep for c in CLASSES) and "| mean AUC |" in deep and "0.970" in deep
    assert "| 13 |" in sections["Lead study"]
    shares = re.findall(r"\| (-?\d+\.\d+) (?=\|)", sections["SHAP lead importance"])  # each lead's share of a class
    assert len(shares) >= 12 and all(len(v.split(".")[1]) == 2 for v in shares), shares
    assert "over 1 test fold(s)" in sections["Cross-validation"] and "| STE |" in sections["Cross-validation"]
    for title, png in (("Confusion matrices", "confusion_AF.png"), ("ROC curves", "roc.png"),
                       ("Lead study", "lead_study.png"), ("SHAP lead importance", "lead_importance.png"),
                       ("Cross-validation", "cv_resnet10_all_42.png")):
        target = re.search(rf"\]\(([^)]*{png})\)", sections[title]).group(1)
        assert (results / prepared.name / target).resolve().exists(), (title, target)
    assert "synthetic demo data" in text


def sections_text(text: str, title: str) -> str:
    return dict(zip(report.TITLES, re.split(r"^## .*\n", text, flags=re.M)[1:]))[title]


def test_report_never_mixes_databases(copy_run, prepared, trained, tmp_path):
    """Results are filed by database: a report on folder B shows only B's tables, and refuses a model
    trained on another database."""
    other = tmp_path / "B"
    shutil.copytree(prepared, other)
    results = tmp_path / "results"
    baselines.main(["--data-dir", str(other), "--classifier", "LR", "--results-dir", str(results), "--num-workers", "1",
                    "--no-figures"])
    text = report.main(["--data-dir", str(prepared), "--run", str(copy_run(trained, tmp_path / "m")),
                        "--results-dir", str(results)]).read_text()
    assert "| LR |" not in sections_text(text, "Expert-feature baselines")
    assert (results / "B" / "baselines_all.csv").exists() and not (results / prepared.name / "baselines_all.csv").exists()
    with pytest.raises(SystemExit, match="a report covers one database"):
        report.main(["--data-dir", str(other), "--run", str(trained["model_path"]), "--results-dir", str(results)])


def test_report_never_shows_metrics_of_another_checkpoint(copy_run, prepared, trained, tmp_path):
    """A model retrained (or replaced) after its evaluation: the report says the metrics are out of
    date instead of showing them as this model's."""
    import torch
    model, results = copy_run(trained, tmp_path / "m") / "model.pth", tmp_path / "results"
    predict.main(["--run", str(model), "--results-dir", str(results), "--n-bootstrap", "0", "--num-workers", "0",
                  "--no-figures"])
    argv = ["--data-dir", str(prepared), "--run", str(model), "--results-dir", str(results)]
    assert "Out of date" not in report.main(argv).read_text()
    ckpt = torch.load(model, weights_only=True)
    ckpt["model"]["net.fc.weight"] += 0.1
    torch.save(ckpt, model)
    text = report.main(argv).read_text()
    deep = sections_text(text, "Deep model (12 leads), test fold")
    assert "Out of date" in deep and "changed after it was evaluated" in deep and "| mean AUC |" not in deep


@pytest.mark.slow
def test_the_report_never_shows_another_models_shap_or_external_numbers(change_weights, evaluated_copy, prep, trained, prepared, tmp_path):
    """After retraining, every section of the report that came from the old model says so."""
    import synth
    run, common = evaluated_copy(trained, prepared, tmp_path)
    synth.main(["--out", str(tmp_path / "raw"), "--n", "40", "--seed", "3", "--max-seconds", "8"])
    prep(tmp_path / "raw", tmp_path / "OTHER")
    predict.main([*common, "--external-data-dir", str(tmp_path / "OTHER"), "--n-bootstrap", "0", "--no-figures"])
    shap_values.main([*common, "--background", "4", "--n-explain", "2", "--n-samples", "2"])
    argv = ["--data-dir", str(prepared), *common]
    text = report.main(argv).read_text()
    assert "Out of date" not in text and "out of date" not in text and "| OTHER |" in text
    change_weights(run)
    text = report.main(argv).read_text()
    shap = text.split("## SHAP lead importance")[1].split("##")[0]
    external = text.split("## External validation")[1].split("##")[0]
    assert "Out of date" in shap and "| average |" not in shap
    assert external.count("out of date") == 2 and "changed after it was evaluated" in external
def test_report_refuses_a_run_of_a_task_the_data_no_longer_have(tiny, tmp_path):
    """Preprocessed again with other --labels, the folder holds another task: the run's evaluation is of
    the old one, and main.py and predict.py refuse the run; so does the report."""
    import main
    import preprocess
    import synth

    db, data = tmp_path / "PTBXL", tmp_path / "prepared"
    synth.main(["--out", str(db), "--layout", "ptbxl", "--n", "40", "--seed", "9"])
    prep = ["--data-dir", str(db), "--out", str(data), "--num-workers", "0", "--cache-rate", "100"]
    preprocess.main([*prep, "--labels", "superdiagnostic"])
    run = tmp_path / "run"
    main.main(["--data-dir", str(data), *tiny, "--epochs", "1", "--run", str(run)])
    results = tmp_path / "results"
    predict.main(["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "10", "--num-workers", "0",
                  "--no-figures"])
    report.main(["--data-dir", str(data), "--run", str(run), "--results-dir", str(results)])  # its own task: fine
    preprocess.main([*prep, "--labels", "rhythm", "--force"])
    with pytest.raises(SystemExit, match=rf"^error: {run} was trained on label set superdiagnostic, but {data} now "
                                         r"holds label set rhythm \(preprocessed again since\)"):
        report.main(["--data-dir", str(data), "--run", str(run), "--results-dir", str(results)])


def test_a_folder_split_or_cached_again_is_not_set_beside_the_run_s_own_records(tiny, tmp_path, capsys):
    """Preprocessed again with another --seed, the baselines are tested on other records than the deep
    model's test fold: the report says so instead of setting the two tables side by side as one test
    fold. Cached again at another --cache-rate, the run is not evaluated on signals it never learnt from."""
    import baselines
    import main
    import preprocess
    import synth

    records, data = tmp_path / "records", tmp_path / "prepared"
    synth.main(["--out", str(records), "--n", "80", "--seed", "4", "--max-seconds", "10"])
    prep = ["--data-dir", str(records), "--out", str(data), "--num-workers", "0", "--cache-rate", "100"]
    preprocess.main(prep)
    run, results = tmp_path / "run", tmp_path / "results"
    main.main(["--data-dir", str(data), *tiny, "--epochs", "1", "--run", str(run)])
    evaluate = ["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "10", "--num-workers", "0",
                "--no-figures"]
    predict.main(evaluate)
    lr = ["--data-dir", str(data), "--classifier", "LR", "--results-dir", str(results), "--num-workers", "1",
          "--n-bootstrap", "10", "--no-figures"]
    baselines.main(lr)
    argv = ["--data-dir", str(data), "--run", str(run), "--results-dir", str(results)]
    assert "Not on the deep model's test records" not in report.main(argv).read_text()
    # one test record's signal changed (the records, labels, rate and split as they were): the evaluation is stale
    from scipy.io import loadmat, savemat
    from models.checkpoint import peek_checkpoint
    mat = records / f"{peek_checkpoint(run / 'model.pth')['split']['test'][0]}.mat"
    savemat(mat, {"val": loadmat(mat)["val"][:, ::-1].copy()})
    preprocess.main(prep)
    capsys.readouterr()
    text = report.main(argv).read_text()
    assert "_Out of date: " in text and "as it was before it was preprocessed again" in text
    said = capsys.readouterr().err.splitlines()[-1]  # and said where the command is run
    assert said.startswith("note: the deep model's sections show no numbers: ") and "preprocessed again" in said
    hint = f"python predict.py --run {run} --data-dir {data} --results-dir {results}"  # where the report reads
    assert said.endswith(f"rerun `{hint}`") and f"rerun `{hint}`._" in text
    predict.main([*hint.split()[2:], *evaluate[4:]])  # the hint's evaluation brings the report up to date
    assert "Out of date" not in report.main(argv).read_text()
    assert "note:" not in capsys.readouterr().err
    preprocess.main([*prep, "--seed", "3", "--force"])
    text = sections_text(report.main(argv).read_text(), "Expert-feature baselines")  # not rerun yet: other data
    assert re.search(rf"\| LR \| _out of date: made from other data than {data} holds now \(preprocessed again "
                     rf"since\); rerun `python baselines.py --data-dir {data} --results-dir {results}`_", text), text
    baselines.main(lr)
    text = sections_text(report.main(argv).read_text(), "Expert-feature baselines")
    assert re.search(r"_Not on the deep model's test records: all/LR: \d+ records, \d+ of them in the deep model's "
                     r"\d+\. These rows and the deep model's are not a comparison on the same records\._", text), text
    preprocess.main([*prep, "--cache-rate", "50", "--force"])
    with pytest.raises(SystemExit, match=rf"^error: {data} is now cached at 50 Hz; this run was trained from its "
                                         r"cache at 100 Hz \(preprocessed again since with another --cache-rate\)"):
        predict.main([*evaluate, "--force"])
    # the report refuses it as predict.py does: its evaluations are not of the data the folder now holds
    with pytest.raises(SystemExit, match=rf"^error: {run}: {data} is now cached at 50 Hz; .* its evaluations are not "
                                         rf"of the data {data} now holds$"):
        report.main(argv)
    synth.main(["--out", str(records), "--n", "80", "--seed", "9", "--max-seconds", "10", "--force"])  # other records
    preprocess.main([*prep, "--force"])
    with pytest.raises(SystemExit, match=rf"^error: {run}: the labels of this run's train records in .* changed since "
                                         r"training"):
        report.main(argv)


def test_a_study_table_is_out_of_date_once_a_run_behind_it_changes(prepared, trained, tiny, tmp_path, monkeypatch):
    """A cross-validation table (as a lead study's or the matrix) was read from its runs' evaluations: once
    one of them is evaluated again with other settings, or its model trained again (an interrupted rerun
    with other settings leaves such runs), the report says the table is out of date instead of showing
    numbers the runs no longer give."""
    import shutil

    import cross_validate
    import torch

    results, runs = tmp_path / "results", tmp_path / "runs"
    cv = ["--data-dir", str(prepared), *tiny, "--epochs", "1", "--limit", "60", "--n-bootstrap", "10",
          "--results-dir", str(results)]
    monkeypatch.chdir(tmp_path)
    cross_validate.main([*cv, "--folds", "2", "--runs-dir", "runs"])  # its model recorded by a relative path
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cross_validate.main([*cv, "--folds", "1", "--runs-dir", str(runs)])  # fold 2 kept, read from another folder
    argv = ["--data-dir", str(prepared), "--run", str(trained["model_path"]), "--results-dir", str(results)]
    section = lambda: sections_text(report.main(argv).read_text(), "Cross-validation")  # noqa: E731
    assert "over 2 test fold(s)" in section() and "Out of date" not in section()
    [run] = [p for p in runs.iterdir() if p.name.endswith("fold1")]
    evaluation = results / prepared.name / run.name
    kept = {p: p.read_bytes() for p in (evaluation / "evaluated.json", run / "model.pth")}
    predict.main(["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "20", "--num-workers", "0"])
    assert re.search(r"_Out of date: a run or evaluation it was made from changed since \(.*evaluated.json", section())
    for path, data in kept.items():
        path.write_bytes(data)
    assert "Out of date" not in section()
    ckpt = torch.load(run / "model.pth", weights_only=True)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, run / "model.pth")  # trained again, not evaluated yet
    assert re.search(r"_Out of date: a run or evaluation it was made from changed since \(.*model.pth", section())
    shutil.rmtree(run)
    assert re.search(r"_Out of date: .*model.pth is missing", section())


def test_a_lead_subset_run_is_not_set_beside_the_12_lead_published_values(prepared, tiny, tmp_path):
    import main
    run, results = tmp_path / "lead_I", tmp_path / "results"
    main.main(["--data-dir", str(prepared), *tiny, "--epochs", "1", "--leads", "I", "--limit", "60", "--run", str(run)])
    predict.main(["--run", str(run), "--results-dir", str(results), "--n-bootstrap", "0", "--num-workers", "0",
                  "--no-figures"])
    text = report.main(["--data-dir", str(prepared), "--run", str(run), "--results-dir", str(results)]).read_text()
    deep = sections_text(text, "Deep model (12 leads), test fold")
    assert deep.strip().startswith("_This run reads lead(s) I, not the 12 leads") and "paper (Zhang" not in deep
    assert f"Model: `{run}` (resnet10, lead(s) I," in text


def test_tables_of_data_preprocessed_again_are_marked_out_of_date(small, tmp_path):
    """The dataset, cross-validation, lead-study and cross-database tables record the data they were made
    from: once the folder is preprocessed again (here with another fold seed: other data), each section
    says it is out of date and how to redo it, instead of showing a table of data the folder no longer
    holds (the matrix: of this database's data, whatever the other databases' record says)."""
    import preprocess
    from models.run import Run
    from utils.results import record_data, record_databases, results_home

    data, results = tmp_path / "d", tmp_path / "r"
    preprocess.main(["--data-dir", str(small["raw"]), "--out", str(data), "--num-workers", "1"])
    statistic.main(["--data-dir", str(data), "--results-dir", str(results)])
    home = results_home(results, data)
    for stem in ("cv_resnet10_all_42", "lead_study"):  # recorded as cross_validate.py and lead_study.py do
        files = [home / f"{stem}{suffix}" for suffix in (".csv", ".md", ".png")]
        for f in files:
            f.write_text(f"{stem}\n")
        record_data(home / f"{stem}.json", data, files)
    write_matrix(results / "cross_database", ("D", "d"))
    record_databases(results / "cross_database" / "matrix.json", [small["D"], data],
                     [results / "cross_database" / name for name in ("matrix.csv", "matrix.md")])
    r = report.Report(data, Run(tmp_path / "run"), results, home, tuple(CLASSES), None)
    sections = {"statistic": report.dataset_section, "cross_validate": report.cv_section,
                "lead_study": report.lead_section, "cross_database": report.cross_database_section}
    assert not any("Out of date" in section(r) for section in sections.values())
    preprocess.main(["--data-dir", str(small["raw"]), "--out", str(data), "--num-workers", "1", "--seed", "5"])
    for command, section in sections.items():
        said = section(r)
        assert "_Out of date: made from other data than" in said and f"rerun `python {command}.py" in said, said
        assert "|" not in said  # no table


def write_matrix(folder, tested) -> None:
    """A cross-database matrix.csv and .md whose cells test each of `tested` on each."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{t},{u},60,0.5" for t in tested for u in tested]
    (folder / "matrix.csv").write_text("trained_on,tested_on,records,auc\n" + "\n".join(rows) + "\n")
    (folder / "matrix.md").write_text("| trained on | tested on |\n")


def test_the_cross_database_matrix_is_shown_only_in_a_report_of_one_of_its_databases(small, prep, tmp_path):
    """The results root holds one cross-database matrix: a report of a database it does not test on says
    so (naming the databases it holds) instead of showing other databases' cells as its own. One that tests
    it is shown while its record says that each of its databases holds the data it was made from: without
    a record, with a file changed, once any database is preprocessed again (the cells trained on it are
    of its old data), or gone, the section says it is out of date."""
    import shutil

    from models.run import Run
    from utils.results import record_databases

    data, other = tmp_path / "E", tmp_path / "F"
    for folder in (data, other):
        prep(small["raw"], folder)
    matrix = tmp_path / "r" / "cross_database"
    r = report.Report(data, Run(tmp_path / "run"), tmp_path / "r", tmp_path / "r" / "E", tuple(CLASSES), None)

    def recorded() -> None:
        write_matrix(matrix, ("E", "F"))
        record_databases(matrix / "matrix.json", [data, other], [matrix / "matrix.csv", matrix / "matrix.md"])

    def out_of_date(why: str, of: report.Report = r) -> None:
        said = report.cross_database_section(of)
        assert said.startswith("_Out of date: ") and why in said and "|" not in said, said

    write_matrix(matrix, ("a", "b"))
    said = report.cross_database_section(r)
    assert said.startswith(f"_Not available: {matrix} holds the matrix of a, b, not of E;"), said
    write_matrix(matrix, ("NA", "007"))  # names read as names, not as a missing value and a number
    said = report.cross_database_section(r)
    assert said.startswith(f"_Not available: {matrix} holds the matrix of 007, NA, not of E;"), said
    write_matrix(matrix, ("a", "b", "E"))
    out_of_date("matrix.json is missing")
    recorded()
    assert report.cross_database_section(r).startswith("| trained on | tested on |")
    (matrix / "matrix.md").write_text("| trained on | tested on | edited |\n")
    out_of_date("matrix.md")
    record_databases(matrix / "matrix.json", [other], [matrix / "matrix.csv", matrix / "matrix.md"])
    out_of_date("its record names no data of E")
    (matrix / "matrix.json").write_text('{"databases": ["E", "F"]}')
    out_of_date("its record of the databases is damaged")
    recorded()
    prep(small["raw"], other, "--seed", "5")
    out_of_date(f"made from other data than {other} holds now (F preprocessed again since)")
    recorded()
    assert report.cross_database_section(r).startswith("| trained on | tested on |")
    elsewhere = tmp_path / "elsewhere" / "E"  # a folder of the same name holding other data: not the matrix's
    prep(small["raw"], elsewhere, "--seed", "5")
    out_of_date(f"made from other data than {elsewhere} holds now (E preprocessed again since)",
                report.Report(elsewhere, Run(tmp_path / "run"), tmp_path / "r", tmp_path / "r" / "E", tuple(CLASSES),
                              None))
    shutil.rmtree(other)
    out_of_date(f"made from F at {other}, which holds no preprocessed database now")


def test_the_papers_numbers_set_beside_a_run_are_the_published_ones():
    """Zhang et al., iScience 2021, on CPSC2018's nine classes: mean AUC 0.970, mean F1 0.813; the best
    single leads I, aVR and V5 (typed here from the paper, not from the code)."""
    assert report.PAPER == {"mean_auc": 0.970, "mean_f1": 0.813, "best_single_leads": "I, aVR, V5"}
