"""GLUE/custom loading must give the Hub's layout, whatever the source, and fail legibly."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Value

from sage_hf.data import GLUE_TASKS, get_task, infer_text_columns, load_custom, load_glue, validate_labels
from sage_hf.data.metrics import METRIC_KEYS

GLUE_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/glue"
needs_glue = pytest.mark.skipif(not GLUE_DATA.is_dir(), reason=f"no GLUE copy at {GLUE_DATA}")


@pytest.fixture(autouse=True)
def _no_glue_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own GLUE_DIR must not change what these tests load."""
    monkeypatch.delenv("GLUE_DIR", raising=False)


def write_tsv(path: Path, lines: list[str], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- registry

EXPECTED = {
    # task: (folder, text columns, label names)
    "cola": ("CoLA", ("sentence",), ("unacceptable", "acceptable")),
    "sst2": ("SST-2", ("sentence",), ("negative", "positive")),
    "mrpc": ("MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qqp": ("QQP", ("question1", "question2"), ("not_duplicate", "duplicate")),
    "stsb": ("STS-B", ("sentence1", "sentence2"), ()),
    "mnli": ("MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": ("QNLI", ("question", "sentence"), ("entailment", "not_entailment")),
    "rte": ("RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
}
EXPECTED_METRICS = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
}


def test_registry_has_exactly_the_eight_glue_tasks() -> None:
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"]


@pytest.mark.parametrize("task", list(EXPECTED))
def test_registry_entry(task: str) -> None:
    spec = get_task(task)
    folder, text_columns, label_names = EXPECTED[task]
    assert spec.folder == folder
    assert spec.text_columns == text_columns
    assert spec.label_names == label_names
    assert spec.num_labels == (1 if task == "stsb" else len(label_names))
    assert spec.is_regression == (task == "stsb")
    assert METRIC_KEYS[spec.name] == EXPECTED_METRICS[task]
    assert spec.main_metric in (*METRIC_KEYS[spec.name], "combined_score")
    features = spec.features()
    assert list(features) == [*text_columns, "label", "idx"]
    if task == "stsb":
        assert features["label"] == Value("float32")
    else:
        assert features["label"].names == list(label_names)


def test_registry_split_files() -> None:
    assert get_task("mnli").split_files == {
        "train": "train.tsv",
        "validation_matched": "dev_matched.tsv",
        "validation_mismatched": "dev_mismatched.tsv",
        "test_matched": "test_matched.tsv",
        "test_mismatched": "test_mismatched.tsv",
    }
    assert get_task("mnli").validation_splits == ("validation_matched", "validation_mismatched")
    assert get_task("mnli").metric_task("validation_mismatched") == "mnli_mismatched"
    for task in ("cola", "sst2", "mrpc", "qqp", "stsb", "qnli", "rte"):
        spec = get_task(task)
        assert spec.split_files == {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
        assert spec.validation_splits == ("validation",)
        assert spec.metric_task("validation") == task


def test_task_aliases() -> None:
    assert get_task("SST-2").name == "sst2"
    assert get_task("STS-B").name == "stsb"
    assert get_task(" CoLA ").name == "cola"


def test_unknown_task_error_lists_valid_tasks() -> None:
    valid = "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"
    with pytest.raises(ValueError, match=rf"Unknown GLUE task 'wnli'; valid tasks: {valid}\."):
        get_task("wnli")
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst3'"):
        load_glue("sst3", glue_dir="/nonexistent")


def test_infer_text_columns_follows_run_glue() -> None:
    assert infer_text_columns(["a", "sentence2", "label", "sentence1"]) == ("sentence1", "sentence2")
    assert infer_text_columns(["question", "sentence", "label", "idx"]) == ("question", "sentence")
    assert infer_text_columns(["label", "text"]) == ("text",)
    with pytest.raises(ValueError, match="No text column found; columns found: label, idx"):
        infer_text_columns(["label", "idx"])


# --------------------------------------------------------------------------- real GLUE copy

REAL = {
    # task: {split: (rows, {label id: count})}; counts from shared/data/README.md
    "sst2": {"train": (67_349, {1: 37_569, 0: 29_780}), "validation": (872, {1: 444, 0: 428})},
    "rte": {"train": (2_490, None), "validation": (277, {0: 146, 1: 131})},
    "mrpc": {"train": (3_668, {1: 2_474, 0: 1_194}), "validation": (408, {1: 279, 0: 129})},
    "cola": {"train": (8_551, {1: 6_023, 0: 2_528}), "validation": (1_043, {1: 721, 0: 322})},
    "stsb": {"train": (5_749, None), "validation": (1_500, None)},
    "qnli": {"validation": (5_463, {0: 2_702, 1: 2_761})},
}


@needs_glue
@pytest.mark.parametrize("task", list(REAL))
def test_load_real_glue(task: str, caplog: pytest.LogCaptureFixture) -> None:
    spec = get_task(task)
    with caplog.at_level(logging.WARNING, logger="sage_hf.data.glue"):
        data = load_glue(task, glue_dir=GLUE_DATA)
    assert "malformed" not in caplog.text
    assert set(data) == set(REAL[task])
    for split, (rows, counts) in REAL[task].items():
        ds = data[split]
        assert len(ds) == rows
        assert ds.column_names == [*spec.text_columns, "label", "idx"]
        assert ds.features == spec.features()
        labels = ds.with_format("arrow")["label"].to_numpy()
        if spec.is_regression:
            assert labels.min() >= 0.0 and labels.max() <= 5.0
            assert len(np.unique(labels)) > 50 and labels[0] == 5.0
        else:
            assert set(np.unique(labels).tolist()) == set(range(spec.num_labels))
            if counts is not None:
                assert dict(Counter(labels.tolist())) == counts
        assert ds.with_format("arrow")["idx"].to_numpy().tolist() == list(range(rows))
        validate_labels(ds, spec.num_labels)


@needs_glue
def test_real_glue_text_is_unquoted() -> None:
    """QUOTE_NONE: quotes in MRPC are text, and SST-2 keeps GLUE's trailing space like the Hub."""
    mrpc = load_glue("mrpc", glue_dir=GLUE_DATA, splits=["validation"])["validation"]
    assert mrpc[0]["sentence2"].startswith('"The foodservice pie business')
    sst2 = load_glue("sst2", glue_dir=GLUE_DATA, splits="validation")["validation"]
    assert sst2[0] == {"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 0}
    cola = load_glue("cola", glue_dir=GLUE_DATA, splits=["validation"])["validation"]
    assert cola[0]["sentence"] == "The sailors rode the breeze clear of the rocks."


@needs_glue
def test_missing_local_split_is_an_error() -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"GLUE qnli split 'train' not found: .*QNLI/train\.tsv is missing; point --glue_dir \(or GLUE_DIR\)",
    ):
        load_glue("qnli", glue_dir=GLUE_DATA, splits=["train", "validation"])


@needs_glue
def test_glue_dir_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLUE_DIR", str(GLUE_DATA))
    data = load_glue("rte", splits=["validation"])
    assert list(data) == ["validation"] and len(data["validation"]) == 277


# --------------------------------------------------------------------------- tiny local folders

MNLI_HEADER_TRAIN = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"
    "\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_HEADER_DEV = MNLI_HEADER_TRAIN.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")


def mnli_row(i: int, premise: str, hypothesis: str, labels: list[str]) -> str:
    parses = ["( x )", "( y )", "(ROOT x)", "(ROOT y)"]
    return "\t".join([str(i), "1", f"{i}e", "fiction", *parses, premise, hypothesis, *labels])


@pytest.fixture
def mnli_dir(tmp_path: Path) -> Path:
    root = tmp_path / "glue"
    write_tsv(root / "MNLI/train.tsv", [
        MNLI_HEADER_TRAIN,
        mnli_row(0, "A man sleeps.", "A person rests.", ["entailment", "entailment"]),
        mnli_row(1, "A cat sits.", "A dog sits.", ["contradiction", "contradiction"]),
        mnli_row(2, 'He said "hi.', "He spoke.", ["neutral", "neutral"]),
    ])
    five = lambda lab: [lab] * 6  # noqa: E731 - label1..label5 + gold_label
    write_tsv(root / "MNLI/dev_matched.tsv", [
        MNLI_HEADER_DEV,
        mnli_row(0, "It rains.", "It is wet.", five("entailment")),
        mnli_row(1, "It rains.", "It is dry.", five("contradiction")),
    ])
    write_tsv(root / "MNLI/dev_mismatched.tsv", [
        MNLI_HEADER_DEV,
        mnli_row(0, "Stocks fell.", "Markets moved.", five("neutral")),
    ])
    return root


def test_mnli_layout(mnli_dir: Path) -> None:
    data = load_glue("mnli", glue_dir=mnli_dir)
    assert list(data) == ["train", "validation_matched", "validation_mismatched"]
    train = data["train"]
    assert train.column_names == ["premise", "hypothesis", "label", "idx"]
    assert train["label"][:] == [0, 2, 1]  # Hub order: entailment, neutral, contradiction
    assert train[2]["premise"] == 'He said "hi.'
    assert data["validation_matched"]["label"][:] == [0, 2]
    assert data["validation_mismatched"][0] == {
        "premise": "Stocks fell.", "hypothesis": "Markets moved.", "label": 1, "idx": 0
    }
    only = load_glue("mnli", glue_dir=mnli_dir, splits=["validation_mismatched"])
    assert list(only) == ["validation_mismatched"]


def test_mnli_plain_validation_split_is_rejected(mnli_dir: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"Unknown split 'validation' for GLUE mnli; "
        r"valid splits: train, validation_matched, validation_mismatched",
    ):
        load_glue("mnli", glue_dir=mnli_dir, splits=["validation"])


def test_glue_dir_may_be_the_task_folder(mnli_dir: Path) -> None:
    assert len(load_glue("mnli", glue_dir=mnli_dir / "MNLI", splits="train")["train"]) == 3


def test_malformed_rows_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_tsv(tmp_path / "RTE/train.tsv", [
        "index\tsentence1\tsentence2\tlabel",
        "0\tA.\tB.\tentailment",
        "1\ttoo short\tentailment",
        "2\tC.\tD.\tmaybe",
        "3\tE.\tF.\tnot_entailment",
        "4\tG.\twith\ttab\tentailment",
        "5\tH.\tI.\t1",
        "",
    ])
    with caplog.at_level(logging.WARNING, logger="sage_hf.data.glue"):
        ds = load_glue("rte", glue_dir=tmp_path)["train"]
    assert ds["idx"][:] == [0, 3, 5]  # idx keeps file positions so rows stay traceable
    assert ds["label"][:] == [0, 1, 1]
    assert "Skipped 3 malformed rows" in caplog.text and "line 3: 3 fields, header has 4" in caplog.text


def test_bom_and_quotes(tmp_path: Path) -> None:
    write_tsv(tmp_path / "MRPC/dev.tsv", [
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        '1\t1\t2\tHe said "yes.\t"Yes," he said.',
        "0\t3\t4\tA\tB",
    ], bom=True)
    ds = load_glue("mrpc", glue_dir=tmp_path)["validation"]
    assert ds[0] == {"sentence1": 'He said "yes.', "sentence2": '"Yes," he said.', "label": 1, "idx": 0}
    assert len(ds) == 2


def test_cola_headerless_and_test_with_header(tmp_path: Path) -> None:
    write_tsv(tmp_path / "CoLA/train.tsv", ["gj04\t1\t\tGood one.", "gj04\t0\t*\tBad one good."])
    write_tsv(tmp_path / "CoLA/test.tsv", ["index\tsentence", "0\tTest sentence."])
    data = load_glue("cola", glue_dir=tmp_path)
    assert data["train"][:] == {"sentence": ["Good one.", "Bad one good."], "label": [1, 0], "idx": [0, 1]}
    assert data["test"][0] == {"sentence": "Test sentence.", "label": -1, "idx": 0}


def test_stsb_scores_are_floats(tmp_path: Path) -> None:
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    rows = ["0\tg\tf\ty\t0\tn\tn\tA.\tB.\t3.800", "1\tg\tf\ty\t1\tn\tn\tC.\tD.\tnan"]
    write_tsv(tmp_path / "STS-B/dev.tsv", [header, *rows])
    ds = load_glue("stsb", glue_dir=tmp_path)["validation"]
    assert ds["label"][:] == [pytest.approx(3.8)] and ds.features["label"] == Value("float32")


def test_wrong_file_for_task_names_columns(tmp_path: Path) -> None:
    write_tsv(tmp_path / "QQP/train.tsv", ["sentence\tlabel", "x\t1"])
    with pytest.raises(
        ValueError,
        match=r"QQP/train\.tsv has no column 'question1' expected for GLUE qqp; columns found: sentence, label\.",
    ):
        load_glue("qqp", glue_dir=tmp_path)


def test_missing_task_folder_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_glue("sst2", glue_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"{tmp_path / 'SST-2'} is missing" in message
    assert "--glue_dir (or GLUE_DIR)" in message and "'nyu-mll/glue' from the Hub" in message


def test_task_folder_without_files_error(tmp_path: Path) -> None:
    (tmp_path / "RTE").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"GLUE task 'rte' has no data files: .*RTE/train\.tsv is missing; point --glue_dir"
    ):
        load_glue("rte", glue_dir=tmp_path)


# --------------------------------------------------------------------------- Hub fallback


def test_hub_fallback_when_no_glue_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = DatasetDict({
        "train": Dataset.from_dict({"sentence": ["a"], "label": [0], "idx": [0]}),
        "validation": Dataset.from_dict({"sentence": ["b"], "label": [1], "idx": [0]}),
    })

    def fake_load(name: str, config: str) -> DatasetDict:
        calls.append((name, config))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_glue("SST-2") is fake
    assert list(load_glue("sst2", hub_name="me/glue", splits=["validation"])) == ["validation"]
    assert calls == [("nyu-mll/glue", "sst2"), ("me/glue", "sst2")]


def test_hub_failure_explains_offline_use(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        RuntimeError,
        match=r"^Could not load 'nyu-mll/glue' \(rte\) from the Hub \(Couldn't reach 'nyu-mll/glue' on the Hub\); "
        r"set --glue_dir or GLUE_DIR",
    ):
        load_glue("rte")


# --------------------------------------------------------------------------- custom files


def test_custom_csv_follows_run_glue(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text('id,sentence1,sentence2,label\n1,"A, quoted",B,pos\n2,C,D,neg\n3,E,F,pos\n')
    (tmp_path / "dev.csv").write_text("id,sentence1,sentence2,label\n1,G,H,neg\n")
    (tmp_path / "test.csv").write_text("id,sentence1,sentence2\n1,I,J\n")
    data = load_custom(
        tmp_path / "train.csv", tmp_path / "dev.csv", tmp_path / "test.csv", cache_dir=tmp_path / "cache"
    )
    assert list(data) == ["train", "validation", "test"]
    assert data["train"].column_names == ["sentence1", "sentence2", "label", "idx"]
    assert data["train"].features["label"] == ClassLabel(names=["neg", "pos"])  # sorted, like run_glue
    assert data["train"][0] == {"sentence1": "A, quoted", "sentence2": "B", "label": 1, "idx": 0}
    assert data["validation"]["label"][:] == [0]
    assert data["test"][0]["label"] == -1
    validate_labels(data, num_labels=2)


def test_custom_json_and_jsonl(tmp_path: Path) -> None:
    rows = [{"text": "good", "stars": 1, "meta": "x"}, {"text": "bad", "stars": 0, "meta": "y"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "dev.json").write_text(json.dumps(rows[:1]))
    data = load_custom(
        train_file=tmp_path / "train.jsonl",
        validation_file=tmp_path / "dev.json",
        text_columns=["text"],
        label_column="stars",
        cache_dir=tmp_path / "cache",
    )
    assert data["train"][:] == {"text": ["good", "bad"], "label": [1, 0], "idx": [0, 1]}
    assert data["validation"].column_names == ["text", "label", "idx"]


def test_custom_float_labels_mean_regression(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"a": "x", "b": "y", "label": 0.5}\n{"a": "z", "b": "w", "label": 4.0}\n')
    ds = load_custom(train_file=tmp_path / "train.jsonl", cache_dir=tmp_path / "cache")["train"]
    assert ds.features["label"] == Value("float32") and ds.column_names == ["a", "b", "label", "idx"]
    validate_labels(ds, num_labels=1)


def test_custom_tsv_is_unquoted(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", ["sentence\tlabel", 'say "hi\t1', "ok\t0"], bom=True)
    ds = load_custom(train_file=tmp_path / "train.tsv", cache_dir=tmp_path / "cache")["train"]
    assert ds["sentence"][:] == ['say "hi', "ok"] and ds["label"][:] == [1, 0]


def test_custom_missing_text_column(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("review,label\ngood,1\n")
    with pytest.raises(ValueError, match=r"train\.csv has no text column 'sentence'; columns found: review, label\."):
        load_custom(train_file=tmp_path / "train.csv", text_columns=["sentence"], cache_dir=tmp_path / "cache")


def test_custom_missing_label_column(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("sentence,target\ngood,1\n")
    with pytest.raises(ValueError, match=r"train\.csv has no label column 'label'; columns found: sentence, target\."):
        load_custom(train_file=tmp_path / "train.csv", cache_dir=tmp_path / "cache")


def test_custom_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs at least one of train_file"):
        load_custom()
    with pytest.raises(FileNotFoundError, match=r"train file not found: .*nope\.csv"):
        load_custom(train_file=tmp_path / "nope.csv")
    (tmp_path / "train.parquet").write_text("x")
    with pytest.raises(
        ValueError, match=r"Unsupported file type 'train\.parquet'; use one of: \.csv, \.tsv, \.json, \.jsonl"
    ):
        load_custom(train_file=tmp_path / "train.parquet")


# --------------------------------------------------------------------------- validate_labels


def test_validate_labels_names_value_and_row() -> None:
    ds = Dataset.from_dict({"sentence": list("abcd"), "label": [0, 1, 3, 2], "idx": [10, 11, 12, 13]})
    with pytest.raises(ValueError, match=r"^Label 3 at row 2 \(idx 12\) is outside \[0, 3\) for num_labels=3\.$"):
        validate_labels(ds, num_labels=3)
    with pytest.raises(ValueError, match=r"Label 3 at row 2 .*; 2 bad rows in all\."):
        validate_labels(ds, num_labels=2)
    validate_labels(ds, num_labels=4)


def test_validate_labels_unlabeled_and_regression() -> None:
    with_missing = Dataset.from_dict({"label": [0, -1, 1]})
    with pytest.raises(ValueError, match=r"Label -1 at row 1 of split 'train' is outside"):
        validate_labels(DatasetDict({"train": with_missing}), num_labels=2)
    validate_labels(DatasetDict({"test": with_missing}), num_labels=2)  # -1 marks unlabeled test rows
    validate_labels(with_missing, num_labels=2, allow_unlabeled=True)
    with pytest.raises(ValueError, match=r"Label nan at row 1 is not a finite number"):
        validate_labels(Dataset.from_dict({"label": [0.5, float("nan")]}), num_labels=1)
    with pytest.raises(ValueError, match=r"Label 0.5 at row 0 is outside"):
        validate_labels(Dataset.from_dict({"label": [0.5, 1.0]}), num_labels=2)
    with pytest.raises(ValueError, match=r"Label 'pos' at row 0 is not a number"):
        validate_labels(Dataset.from_dict({"label": ["pos"]}), num_labels=2)
    with pytest.raises(ValueError, match=r"No label column 'label'; columns found: y"):
        validate_labels(Dataset.from_dict({"y": [0]}), num_labels=2)


def test_validate_labels_respects_selection_order() -> None:
    ds = Dataset.from_dict({"label": [0, 5, 1], "idx": [0, 1, 2]}).select([2, 0, 1])
    with pytest.raises(ValueError, match=r"Label 5 at row 2 \(idx 1\)"):
        validate_labels(ds, num_labels=2)
